"""A terminated ``fedmjp simulate`` stops what it started (SuperLink, flwr-simulation, Ray), like Ctrl-C does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from fedmjp.launch.processes import processes_with_env

from .flower_runs import kill_marked

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
FEDMJP = Path(sys.executable).parent / "fedmjp"


def command_line(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def env_of(pid: int, key: str) -> str | None:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    prefix = f"{key}=".encode()
    return next((item[len(prefix):].decode() for item in env if item.startswith(prefix)), None)


def wait_for_ray(process: subprocess.Popen[bytes], mark: str, timeout: float = 300) -> str:
    """Wait until the run's Ray processes are up (they leave the SuperLink's process group); its FLWR_HOME."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"fedmjp exited early with {process.returncode}"
        pids = processes_with_env("FEDMJP_TEST_MARK", mark)
        homes = {env_of(pid, "FLWR_HOME") for pid in pids if "flower-superlink" in " ".join(command_line(pid))} - {None}
        # A Ray worker (its environment intact, unlike the agents that Ray starts first): Ray is up.
        ray = [pid for pid in pids if (command_line(pid) or [""])[0].startswith("ray::")
               and env_of(pid, "FEDMJP_TEST_MARK") == mark]
        if homes and ray:
            (home,) = homes
            return home
        time.sleep(0.25)
    raise AssertionError(f"no Ray process in {timeout:.0f} s")


def survivors(key: str, value: str, wait: float = 5.0) -> list[str]:
    """Command lines of processes still holding ``key=value`` after up to ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while (pids := processes_with_env(key, value)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return [" ".join(command_line(pid))[:200] for pid in pids]


def test_sigterm_stops_the_superlink_and_ray_and_exits_143(tmp_path: Path) -> None:
    mark = uuid.uuid4().hex
    log = tmp_path / "fedmjp.log"  # a file, not a pipe: nobody reads a pipe while we wait
    # Like tests/flower_runs.start_simulate, but the installed console script (what a user kills).
    with open(log, "wb") as output:
        process = subprocess.Popen([str(FEDMJP), "simulate", str(ROOT / "scenarios" / "ci-smoke.yaml"),
                                    "--out", str(tmp_path / "run")], cwd=tmp_path,
                                   env={**os.environ, "FEDMJP_TEST_MARK": mark}, stdout=output,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        flwr_home = wait_for_ray(process, mark)
        process.send_signal(signal.SIGTERM)  # the CLI only, as `kill PID` does; not its process group
        process.wait(timeout=60)
        output = log.read_text(errors="replace")
        assert survivors("FLWR_HOME", flwr_home) == []
        # Ray's dashboard and runtime-env agents rename themselves over the FLWR_HOME of their /proc environ:
        # the line above finds them as descendants of the raylet, like SimulationSuperLink.stop does. Once the
        # raylet is gone nothing names them, hence this check by the test's own mark for the SuperLink too.
        assert [line for line in survivors("FEDMJP_TEST_MARK", mark, wait=0) if "flower-superlink" in line] == []
        assert process.returncode == 128 + signal.SIGTERM, (process.returncode, output[-2000:])
        assert "Traceback" not in output, output[-2000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        kill_marked(mark)


def test_a_ray_cluster_that_fails_to_start_is_an_error_and_the_superlink_stops(tmp_path: Path,
                                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from fedmjp.launch import superlinks
    from fedmjp.launch.flwr_cli import FlowerError

    real = superlinks.console_script
    monkeypatch.setattr(superlinks, "console_script", lambda name: "false" if name == "ray" else real(name))
    link = superlinks.SimulationSuperLink(tmp_path)
    with pytest.raises(FlowerError, match=r"^ray start exited with code 1"):
        link.__enter__()
    assert link.process is None and link.ray_head is None
    assert survivors("FLWR_HOME", str(link.flwr_home), wait=0) == []
    assert not link.ray_tmp.exists()  # its own cluster's temp dir, removed with it


def test_a_joined_ray_cluster_gets_no_temp_dir_of_ours(tmp_path: Path) -> None:
    """A cluster that fedmjp joins keeps its own temp dir: none is made here, so a killed run leaves none behind."""
    from fedmjp.launch.superlinks import SimulationSuperLink

    made = set(Path("/tmp").glob("fedmjp-ray-*"))
    link = SimulationSuperLink(tmp_path, ray_address="127.0.0.1:6379")
    assert link.ray_tmp is None and "RAY_TMPDIR" not in link.env
    assert set(Path("/tmp").glob("fedmjp-ray-*")) == made
    own = SimulationSuperLink(tmp_path)
    assert own.ray_tmp is not None and own.ray_tmp.is_dir() and own.env["RAY_TMPDIR"] == str(own.ray_tmp)
    own.stop(timeout=0.0)
    assert not own.ray_tmp.exists()


def test_an_app_that_cannot_be_bundled_is_a_flwr_run_error(tmp_path: Path) -> None:
    from fedmjp.launch.flwr_cli import FlowerError
    from fedmjp.launch.superlinks import SimulationSuperLink

    (tmp_path / "config.toml").write_text("")
    with SimulationSuperLink(tmp_path) as link:
        with pytest.raises(FlowerError, match=r"^flwr run failed: .*pyproject\.toml"):
            link.start_run(tmp_path / "no-app", tmp_path / "config.toml")
