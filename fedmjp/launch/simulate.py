"""``fedmjp simulate``: every arm of a scenario on Flower's simulation engine (Ray).

Consecutive arms with the same federation (clients and their resources) are one Flower run
against a private SuperLink, run one after the other by the ServerApp; the ServerApp writes each
arm's per-round metrics into the run directory, which this module polls for progress.
"""

from __future__ import annotations

import itertools
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from ..errors import InputError
from ..federation import checkpoint
from ..federation.rundir import SEEDS_FILE, arm_dir, atomic_json, atomic_write, prepare_run_dir, read_jsonl, seed_dir
from ..federation.runconfig import write_run_config
from ..scenario import Arm, Scenario, parse_scenario
from .app_bundle import stage_app
from .flower_logs import server_error
from .flwr_cli import FlowerError
from .superlinks import SimulationSuperLink


# Called as (arm name, rounds done, rounds in all) whenever progress is polled.
Progress = Callable[[str, int, int], None]
# Called as (seed, arm name, rounds done, rounds in all) by ``simulate_seeds``.
SeedProgress = Callable[[int, str, int, int], None]


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


def federation_of(arm: Arm) -> tuple[int, float, float]:
    """What a Flower simulation run fixes for all its arms: nodes and their resources."""
    return arm.clients.num_clients, arm.clients.cpus, arm.clients.gpus


def run_arms(link: SimulationSuperLink, arms: list[Arm], run_dir: Path, work: Path, progress: Progress,
             resume: bool = False) -> None:
    """Arms that share a federation, one after the other in one Flower run."""
    config = write_run_config(work / f"run-config-{arms[0].name}.toml", arms, run_dir, resume)
    run_id = link.submit(stage_app(work), config, *federation_of(arms[0]))

    done: set[str] = set()

    def poll() -> None:
        """Report the arms the ServerApp has started; a finished arm once more, then no longer read."""
        for arm in arms:
            folder = arm_dir(run_dir, arm.name)
            if arm.name in done or not folder.is_dir():
                continue
            if arm_finished(run_dir, arm):  # checked first: its metrics are complete once the weights exist
                done.add(arm.name)
            progress(arm.name, len(read_jsonl(folder / "metrics.jsonl")), arm.training.rounds)

    # The last arm's final weights are the ServerApp's last write: the run's results are complete.
    status = link.wait(run_id, poll, written=lambda: arm_finished(run_dir, arms[-1]))
    poll()
    if status is not None and not status.succeeded:
        failed = next((arm for arm in arms if not arm_finished(run_dir, arm)), arms[-1])
        logs = link.logs(run_id)
        # The whole log beside the arm's results: the one-line error rarely carries the traceback.
        log_path = arm_dir(run_dir, failed.name) / "flower-run.log"
        atomic_write(log_path, logs.encode())
        raise FlowerError(f"arm {failed.name}: run {run_id} {status.status}: {server_error(logs)} (log: {log_path})")


def check_data(scenario: Scenario, seeds: list[int] | None = None, ray_address: str | None = None,
               in_process: bool = False) -> None:
    """Refuse, before a run writes anything, arms whose clients' data cannot be split as asked (at each of
    ``seeds``); an arm on a remote Ray cluster has its data on that cluster's nodes and is not checked."""
    from ..federation.workload import check_partitioning  # torch and timm: not for the CLI's other commands

    address = ray_address or os.environ.get("RAY_ADDRESS")
    for seeded in [scenario.with_seed(seed) for seed in seeds] if seeds else [scenario]:
        for arm in seeded.arms.values():
            if in_process or not (arm.ray.address or address):
                check_partitioning(arm)


def simulate(scenario: Scenario, out: Path, progress: Progress = lambda *_: None,
             ray_address: str | None = None, resume: bool = False) -> dict[str, Any]:
    """Run every arm (with ``resume``, the unfinished ones, from their last complete round);
    return the final per-arm metrics (the last round of each)."""
    # Absolute: the ServerApp runs in another process, not necessarily in this working directory.
    run_dir = (out if resume else prepare_run_dir(scenario, out)).resolve()
    ray_address = ray_address or os.environ.get("RAY_ADDRESS")
    summary: dict[str, Any] = {}
    pending = [arm for arm in scenario.arms.values() if not (resume and arm_finished(run_dir, arm))]
    with tempfile.TemporaryDirectory(prefix="fedmjp-sim-") as tmp:
        work = Path(tmp)
        # One SuperLink per Ray cluster; one Flower run per stretch of arms with the same federation.
        for address, joining in itertools.groupby(pending, key=lambda arm: arm.ray.address or ray_address):
            with SimulationSuperLink(work, address) as link:
                for _, arms in itertools.groupby(joining, key=federation_of):
                    run_arms(link, list(arms), run_dir, work, progress, resume)
    for arm in scenario.arms.values():
        rounds = read_jsonl(arm_dir(run_dir, arm.name) / "metrics.jsonl")
        summary[arm.name] = rounds[-1] if rounds else {}
    atomic_write(run_dir / "summary.yaml", yaml.safe_dump(summary, sort_keys=True).encode())
    return summary


def simulate_seeds(scenario: Scenario, out: Path, seeds: list[int], progress: SeedProgress = lambda *_: None,
                   ray_address: str | None = None, resume: bool = False,
                   in_process: bool = False) -> dict[int, dict[str, Any]]:
    """Every arm once per seed, each seed a run directory ``out/seed-S`` (same split and initial weights
    for all arms of a seed); with ``resume``, finished seeds are skipped and unfinished ones continued;
    with ``in_process``, without Flower (``fedmjp.launch.inprocess``)."""
    if not resume:
        if out.exists() and any(out.iterdir()):
            raise FileExistsError(f"--out: {out} exists and is not empty")
        out.mkdir(parents=True, exist_ok=True)
        atomic_json(out / SEEDS_FILE, {"seeds": seeds})
    summaries = {}
    for seed in seeds:
        folder = seed_dir(out, seed)
        again = resume and (folder / "scenario.yaml").is_file()
        if in_process:
            from .inprocess import simulate_in_process

            summaries[seed] = simulate_in_process(scenario.with_seed(seed), folder,
                                                  lambda arm, done, total, s=seed: progress(s, arm, done, total))
            continue
        summaries[seed] = simulate(load_run_dir(folder) if again else scenario.with_seed(seed), folder,
                                   lambda arm, done, total, s=seed: progress(s, arm, done, total), ray_address,
                                   resume=again)
    return summaries
