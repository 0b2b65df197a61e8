"""Scratch folders of a run killed with SIGKILL are removed by the next run; a live run's are kept."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from fedmjp.launch.scratch import remove_stale, scratch, scratch_dir


def killed_process_scratch(root: Path, kind: str) -> Path:
    """A process that makes its scratch folder in ``root`` and is then killed with SIGKILL."""
    code = ("import sys, time; from pathlib import Path; from fedmjp.launch.scratch import scratch_dir; "
            f"print(scratch_dir({kind!r}, Path(sys.argv[1])), flush=True); time.sleep(60)")
    process = subprocess.Popen([sys.executable, "-c", code, str(root)], stdout=subprocess.PIPE, text=True)
    path = Path(process.stdout.readline().strip())
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stdout.close()
    return path


def test_a_killed_runs_scratch_is_removed_when_the_next_is_made_and_a_live_ones_is_kept(tmp_path: Path) -> None:
    killed = killed_process_scratch(tmp_path, "sim")
    (killed / "app").mkdir()
    assert killed.name.startswith("fedmjp-sim-") and killed.is_dir()
    live = scratch_dir("flwr-home", tmp_path)
    assert f"-{os.getpid()}-" in live.name
    assert not killed.exists() and live.is_dir()
    other = tmp_path / "fedmjp-notes"  # not a scratch folder's name: never touched
    other.mkdir()
    assert remove_stale(tmp_path) == [] and other.is_dir() and live.is_dir()


def test_scratch_removes_its_folder_on_leaving() -> None:
    with scratch("deploy") as path:
        assert path.is_dir() and path.name.startswith(f"fedmjp-deploy-{os.getpid()}-")
    assert not path.exists()
