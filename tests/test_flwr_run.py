"""`flwr run .` as a Flower user's first command: the real CLI, Flower's default local federation
(2 simulated SuperNodes, a detached local SuperLink) and a private FLWR_HOME. The app's default scenario
(scenarios/flwr-run.yaml) is sized for it: the run finishes, says where its files are, and leaves nothing
running. A scenario that needs more nodes stops in one line (tests/test_partitions.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from fedmjp.launch.processes import console_script, free_port, venv_path
from fedmjp.launch.flower_config import QUIET_ENV

from .flower_runs import kill_marked
from fedmjp.launch.processes import processes_with_env

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def default_flwr_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    home = tmp_path_factory.mktemp("flwr-home")
    mark = uuid.uuid4().hex
    env = {**os.environ, **QUIET_ENV, "FLWR_HOME": str(home), "PATH": venv_path(), "FEDMJP_TEST_MARK": mark,
           # Flower's local SuperLink ports (39091, 39093 by default), free ones: tests may run side by side.
           "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(free_port()), "FLWR_LOCAL_CONTROL_API_PORT": str(free_port())}
    started = time.monotonic()
    try:
        done = subprocess.run([console_script("flwr"), "run", ".", "--stream"], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=300)
        seconds = time.monotonic() - started
        status = subprocess.run([console_script("flwr"), "ls", "--format", "json"], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=60).stdout
    finally:
        kill_marked(mark)  # the detached local SuperLink Flower started, and its children
    return {"done": done, "seconds": seconds, "status": status, "left": processes_with_env("FEDMJP_TEST_MARK", mark)}


@pytest.mark.slow
def test_flwr_run_on_the_default_federation_runs_the_default_scenario_to_the_end(default_flwr_run: dict) -> None:
    done = default_flwr_run["done"]
    output = done.stdout + done.stderr
    assert "finished:completed" in default_flwr_run["status"], output[-3000:]
    [line] = [line for line in output.splitlines() if "arm vit finished: 2 round(s) in " in line]
    out = Path(line.split(" in ", 1)[1].strip())  # runs/vit-TIME/arms/vit in the project (the app's directory)
    try:
        rows = (out / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(row)["round"] for row in rows] == [1, 2] and (out / "final_weights.pt").is_file()
    finally:
        shutil.rmtree(out.parents[1])
    assert "Traceback" not in output
    print(f"flwr run . ended after {default_flwr_run['seconds']:.1f} s")


@pytest.mark.slow
def test_flwr_run_leaves_no_process_behind(default_flwr_run: dict) -> None:
    assert default_flwr_run["left"] == []
