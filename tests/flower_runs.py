"""Helpers for tests that run real Flower processes: tiny scenarios, start, clean up."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

from fedmjp.launch.processes import processes_with_env

# The smallest audited federation: APRIL on FedSGD with batch size 1, a 2-block ViT-Ti on
# real photographs, 2 clients, 2 rounds.
TINY_AUDITED: dict[str, Any] = {
    "name": "tiny-audited",
    "seed": 0,
    "device": "cpu",
    "data": {"source": "photos", "test_limit": 40},
    "clients": {"num_clients": 2, "cpus": 1},
    "training": {"rounds": 2, "mode": "fedsgd", "batch_size": 1, "server_optimizer": "adam", "server_lr": 0.001},
    "model": {"name": "vit_tiny_patch4_32", "kwargs": {"depth": 2}},
    "audit": {"attacks": [{"name": "april"}]},
}


def scenario(**overrides: Any) -> dict[str, Any]:
    """TINY_AUDITED with top-level sections replaced or merged (dicts merge one level deep)."""
    result = copy.deepcopy(TINY_AUDITED)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict) and key != "arms":
            result[key] = {**result[key], **value}
        else:
            result[key] = value
    return result


def write_scenario(folder: Path, content: dict[str, Any], name: str = "scenario.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(content))
    return path


def start_simulate(content: dict[str, Any], folder: Path, mark: str, *args: str,
                   ray_address: str | None = None) -> subprocess.Popen[str]:
    """`fedmjp simulate` of ``content`` into ``folder/run`` (or with ``args``) in its own session, joining the Ray
    cluster at ``ray_address`` when given (else starting its own); every process it starts inherits ``mark``."""
    path = write_scenario(folder, content)
    return start_fedmjp_simulate(list(args or (str(path), "--out", str(folder / "run"))), mark, ray_address)


def start_fedmjp_simulate(args: list[str], mark: str, ray_address: str | None = None) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "fedmjp", "simulate", *args, "--json",
               *(("--ray-address", ray_address) if ray_address else ())]
    return subprocess.Popen(command, env={**os.environ, "FEDMJP_TEST_MARK": mark}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def kill_marked(mark: str) -> None:
    """Stop everything a run started (a SIGKILLed CLI cannot stop its SuperLink itself)."""
    for _ in range(50):
        pids = processes_with_env("FEDMJP_TEST_MARK", mark)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)


def finish(process: subprocess.Popen[str], mark: str, timeout: float = 1200) -> str:
    """Wait for a run; clean up; fail with its stderr when it failed. Returns stdout."""
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    finally:
        kill_marked(mark)
    assert process.returncode == 0, stderr[-3000:]
    return stdout


# Scenarios whose runs tests only read once finished, by name. The suite runs them all as one sweep
# (`fedmjp simulate A.yaml B.yaml ...`, the ``sweep`` fixture): arms whose clients take the same resources
# share a Flower run whatever scenario they come from and however many clients they have, so the
# simulation's start and the clients' imports are paid once, not once per scenario (about 20 s each on
# 2 cores).
SWEEP: dict[str, dict[str, Any]] = {}


def in_sweep(content: dict[str, Any]) -> dict[str, Any]:
    """Add a scenario (its name unique in the suite) to the suite's sweep; returns it."""
    assert SWEEP.setdefault(content["name"], content) is content, f"two sweep scenarios named {content['name']}"
    return content


def outlives_its_arm(content: dict[str, Any]) -> bool:
    """A scenario with a slow client: its late message is still running when its arm ends."""
    return "slow" in content.get("faults", {}).get("kinds", [])


def simulate_sweep(folder: Path, ray_address: str) -> dict[str, Path]:
    """Run every scenario of SWEEP with one `fedmjp simulate`; their run directories by name. Scenarios with a
    slow client go last: when its late message ends, Flower's simulation engine stores the context it started
    with over that node's newer one (the last to finish wins), which loses a later SecAgg+ arm's key state
    ("expect setup stage, but receive share_keys stage")."""
    ordered = sorted(SWEEP.items(), key=lambda item: outlives_its_arm(item[1]))
    paths = [str(write_scenario(folder, content, f"{name}.yaml")) for name, content in ordered]
    mark = uuid.uuid4().hex
    printed = json.loads(finish(start_fedmjp_simulate([*paths, "--out", str(folder / "runs")], mark, ray_address),
                                mark))
    if len(SWEEP) == 1:  # one scenario: --out is its run directory
        return {name: Path(printed["run_dir"]) for name in SWEEP}
    return {name: Path(run["run_dir"]) for name, run in printed["scenarios"].items()}
