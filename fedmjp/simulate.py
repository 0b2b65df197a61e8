"""``fedmjp simulate``: every arm of a scenario on Flower's simulation engine (Ray).

Each arm is one Flower run against a private SuperLink; the ServerApp writes the arm's
per-round metrics into the run directory, which this module polls for progress.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from .rundir import arm_dir, atomic_json, atomic_write, read_jsonl, versions
from . import checkpoint
from .errors import InputError
from .scenario import Arm, Scenario, parse_scenario
from .superlink import FlowerError, SimulationSuperLink

APP_DIR = Path(__file__).resolve().parent.parent

# Called as (arm name, rounds done, rounds in all) whenever progress is polled.
Progress = Callable[[str, int, int], None]


def prepare_run_dir(scenario: Scenario, out: Path) -> Path:
    """Create the run directory with the resolved scenario and versions (refuses a used one)."""
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"--out: {out} exists and is not empty")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "scenario.yaml", scenario.to_yaml().encode())
    atomic_json(out / "versions.json", versions())
    return out


def load_run_dir(run_dir: Path) -> Scenario:
    """The resolved scenario of an existing run directory (for ``--resume``)."""
    path = run_dir / "scenario.yaml"
    if not path.is_file():
        raise InputError(f"--resume: {run_dir} is not a fedmjp run directory (no scenario.yaml)")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        raise InputError(f"--resume: {path} is not valid YAML (corrupted run directory)") from None
    scenario = parse_scenario(raw, source=str(path))
    check_resumable(run_dir, scenario)
    return scenario


def arm_finished(run_dir: Path, arm: Arm) -> bool:
    return (arm_dir(run_dir, arm.name) / "final_weights.pt").exists()


def check_resumable(run_dir: Path, scenario: Scenario) -> None:
    """Refuse a damaged run directory before starting anything."""
    for arm in scenario.arms.values():
        folder = arm_dir(run_dir, arm.name)
        try:
            checkpoint.load(folder / "checkpoint.pt")
            read_jsonl(folder / "metrics.jsonl")
        except (ValueError, json.JSONDecodeError) as exc:
            raise InputError(f"--resume: arm {arm.name}: {exc} (corrupted run directory)") from None


def _run_config_file(arm: Arm, run_dir: Path, work: Path, resume: bool) -> Path:
    path = work / f"run-config-{arm.name}.toml"
    # TOML basic strings are JSON strings, so json.dumps quotes them correctly.
    path.write_text(f"arm-json = {json.dumps(arm.model_dump_json())}\nrun-dir = {json.dumps(str(run_dir))}\n"
                    f"resume = {'true' if resume else 'false'}\n")
    return path


def run_arm(link: SimulationSuperLink, arm: Arm, run_dir: Path, work: Path, progress: Progress,
            resume: bool = False) -> None:
    run_id = link.submit(APP_DIR, _run_config_file(arm, run_dir, work, resume), arm.clients.num_clients,
                         arm.clients.cpus, arm.clients.gpus)
    metrics = arm_dir(run_dir, arm.name) / "metrics.jsonl"
    poll = lambda: progress(arm.name, len(read_jsonl(metrics)), arm.training.rounds)  # noqa: E731
    status = link.wait(run_id, poll)
    poll()
    if not status.succeeded:
        logs = link.logs(run_id)
        # The whole log beside the arm's results: the one-line error rarely carries the traceback.
        log_path = arm_dir(run_dir, arm.name) / "flower-run.log"
        atomic_write(log_path, logs.encode())
        raise FlowerError(f"arm {arm.name}: run {run_id} {status.status}: {_server_error(logs)} (log: {log_path})")


def _server_error(logs: str) -> str:
    """The last error line of the ServerApp's log, the part a user needs."""
    lines = [line.strip() for line in logs.splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line or "Exception" in line or "ERROR" in line]
    return (errors or lines or ["no logs"])[-1][-500:]


def simulate(scenario: Scenario, out: Path, progress: Progress = lambda *_: None,
             ray_address: str | None = None, resume: bool = False) -> dict[str, Any]:
    """Run every arm (with ``resume``, the unfinished ones, from their last complete round);
    return the final per-arm metrics (the last round of each)."""
    # Absolute: the ServerApp runs in another process, not necessarily in this working directory.
    run_dir = (out if resume else prepare_run_dir(scenario, out)).resolve()
    ray_address = ray_address or os.environ.get("RAY_ADDRESS")
    summary: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="fedmjp-sim-") as tmp:
        work = Path(tmp)
        for arm in scenario.arms.values():
            if resume and arm_finished(run_dir, arm):
                continue
            with SimulationSuperLink(work, arm.ray.address or ray_address) as link:
                run_arm(link, arm, run_dir, work, progress, resume)
    for arm in scenario.arms.values():
        rounds = read_jsonl(arm_dir(run_dir, arm.name) / "metrics.jsonl")
        summary[arm.name] = rounds[-1] if rounds else {}
    atomic_write(run_dir / "summary.yaml", yaml.safe_dump(summary, sort_keys=True).encode())
    return summary
