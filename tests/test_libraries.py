"""Where a library does the job: the TOML files Flower reads (tomli-w) and the marked processes (psutil)."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import psutil
import pytest
from flwr.cli.flower_config import read_superlink_connection
from flwr.common.config import parse_config_args

from fedmjp.federation.runconfig import RunPart, arms_from_run_config, run_arms_from_run_config, write_run_config
from fedmjp.launch.flower_config import write_connection
from fedmjp.launch.processes import kill_by_env, processes_with_env
from fedmjp.scenario import load_scenario

QUICKSTART = Path(__file__).resolve().parent.parent / "scenarios" / "quickstart.yaml"


def test_flower_reads_the_connection_we_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / 'home "quoted"'
    path = write_connection(home, "fedmjp", "127.0.0.1:9093")
    assert tomllib.loads(path.read_text()) == {
        "superlink": {"default": "fedmjp", "fedmjp": {"address": "127.0.0.1:9093", "insecure": True}}}
    monkeypatch.setenv("FLWR_HOME", str(home))
    connection = read_superlink_connection()
    assert (connection.name, connection.address, connection.insecure) == ("fedmjp", "127.0.0.1:9093", True)

    write_connection(home, "fedmjp", "superlink:9093", root_certificates=tmp_path / "ca.crt")
    connection = read_superlink_connection("fedmjp")
    assert connection.root_certificates == str((tmp_path / "ca.crt").resolve()) and not connection.insecure


def test_flower_reads_the_run_config_we_write(tmp_path: Path) -> None:
    arms = list(load_scenario(QUICKSTART).arms.values())
    run_dir = tmp_path / "runs \\ odd \"dir\""
    path = write_run_config(tmp_path / "run.toml", [RunPart(run_dir, arms, resume=True)])
    config = parse_config_args([str(path)])  # what `flwr run --run-config FILE` does with it
    assert list(arms_from_run_config(config).values()) == arms
    assert all(e.run_dir == str(run_dir) and e.resume for e in run_arms_from_run_config(config).values())


def test_a_marked_process_is_found_and_stopped() -> None:
    mark = f"fedmjp-test-{os.getpid()}"
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                             env={**os.environ, "FEDMJP_LIBRARY_MARK": mark})
    try:
        assert processes_with_env("FEDMJP_LIBRARY_MARK", mark) == [child.pid]
        kill_by_env("FEDMJP_LIBRARY_MARK", mark, timeout=5)
        assert child.wait(5) == -15  # SIGTERM, within the timeout
        assert processes_with_env("FEDMJP_LIBRARY_MARK", mark) == []
    finally:
        child.kill()
        child.wait()


def test_an_unmarked_child_of_a_marked_process_is_stopped_with_it() -> None:
    """Like Ray's agents under the raylet: the child's environment does not show the mark, and it ignores
    SIGTERM; it is found through its parent and killed before the parent goes."""
    mark = f"fedmjp-test-parent-{os.getpid()}"
    agent = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); "
             "time.sleep(60)")
    parent_code = ("import os, subprocess, sys, time; env = {k: v for k, v in os.environ.items() "
                   "if k != 'FEDMJP_LIBRARY_MARK'}; "
                   f"child = subprocess.Popen([sys.executable, '-c', {agent!r}], env=env, stdout=subprocess.PIPE); "
                   "child.stdout.readline(); print(child.pid, flush=True); time.sleep(60)")
    parent = subprocess.Popen([sys.executable, "-c", parent_code], env={**os.environ, "FEDMJP_LIBRARY_MARK": mark},
                              stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
        assert sorted(processes_with_env("FEDMJP_LIBRARY_MARK", mark)) == sorted([parent.pid, child])
        kill_by_env("FEDMJP_LIBRARY_MARK", mark, timeout=30)
        assert parent.wait(5) == -15
        # Gone (or a zombie its new parent has yet to reap) long before the timeout: SIGKILLed at once.
        assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE
    finally:
        parent.kill()
        parent.wait()


def test_the_staged_app_bundles_exactly_what_flwr_run_bundles_from_the_project(tmp_path: Path) -> None:
    # flwr run DIR walks all of DIR; the staged folder must give Flower the same bundle, byte for byte.
    from flwr.cli.build import build_fab_from_disk

    from fedmjp.launch.app_bundle import PROJECT, app_files, stage_app

    app = stage_app(tmp_path)
    assert {"pyproject.toml", "server/app.py", "clients/app.py", "fedmjp/protocol.py"} <= set(app_files())
    assert build_fab_from_disk(app) == build_fab_from_disk(PROJECT)
