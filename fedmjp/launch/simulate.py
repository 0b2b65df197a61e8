"""``fedmjp simulate``: every arm of a scenario on Flower's simulation engine (Ray).

Arms whose clients take the same resources are one Flower run against a private SuperLink, run one after
the other by the ServerApp, whichever run directory they write into (the seeds of a sweep, several scenarios)
and however many clients each has: the run simulates as many SuperNodes as its largest arm needs, and each
arm uses partitions 0..N-1 of its own N. The ServerApp writes each arm's per-round metrics into its run
directory, which this module polls for progress.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import InputError
from ..federation.rundir import (SEEDS_FILE, arm_dir, arm_finished, atomic_json, atomic_write, prepare_run_dir,
                                 read_jsonl, seed_dir)
from ..federation.runconfig import RunPart, write_run_config
from ..federation.split_check import Split, check_partitioning
from ..scenario import Arm, Scenario, parse_scenario
from .app_bundle import stage_app
from .flower_logs import server_error
from .flwr_cli import FlowerError
from .scratch import scratch
from .superlinks import SimulationSuperLink


# Called as (index of the planned run, arm name, rounds done, rounds in all) by ``simulate_runs``.
RunProgress = Callable[[int, str, int, int], None]


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


def check_resumable(run_dir: Path, scenario: Scenario) -> None:
    """Refuse a damaged run directory before starting anything."""
    from ..federation import checkpoint  # torch: only a resume needs it

    for arm in scenario.arms.values():
        folder = arm_dir(run_dir, arm.name)
        try:
            checkpoint.load(folder / "checkpoint.pt")
            read_jsonl(folder / "metrics.jsonl")
        except (ValueError, json.JSONDecodeError) as exc:
            raise InputError(f"--resume: arm {arm.name}: {exc} (corrupted run directory)") from None


def federation_of(arm: Arm) -> tuple[int, float]:
    """What a Flower simulation run fixes for all its arms: each node's resources (its SuperNodes are as many
    as its largest arm's clients)."""
    return arm.clients.cpus, arm.clients.gpus


@dataclass(frozen=True)
class Planned:
    """A scenario to run into a run directory (``resume``: continue its unfinished arms)."""

    scenario: Scenario
    out: Path
    resume: bool = False


@dataclass(frozen=True)
class Job:
    """One arm of a planned run, with the run directory it writes into."""

    run: int  # index of its Planned run
    run_dir: Path
    arm: Arm
    resume: bool


def run_arms(link: SimulationSuperLink, jobs: list[Job], work: Path, progress: RunProgress) -> None:
    """Arms that share a federation (of one run directory or several), one after the other in one Flower run."""
    parts = [RunPart(group[0].run_dir, [job.arm for job in group], group[0].resume)
             for group in (list(g) for _, g in itertools.groupby(jobs, key=lambda job: job.run))]
    config = write_run_config(work / f"run-config-{jobs[0].run}-{jobs[0].arm.name}.toml", parts)
    supernodes = max(job.arm.clients.num_clients for job in jobs)
    run_id = link.submit(stage_app(work), config, supernodes, *federation_of(jobs[0].arm))
    done: set[int] = set()

    def poll() -> None:
        """Report the arms the ServerApp has started; a finished arm once more, then no longer read."""
        for index, job in enumerate(jobs):
            folder = arm_dir(job.run_dir, job.arm.name)
            if index in done or not folder.is_dir():
                continue
            if arm_finished(job.run_dir, job.arm.name):  # checked first: its metrics are complete once the weights exist
                done.add(index)
            progress(job.run, job.arm.name, len(read_jsonl(folder / "metrics.jsonl")), job.arm.training.rounds)

    # The last arm's final weights are the ServerApp's last write: the run's results are complete.
    status = link.wait(run_id, poll, written=lambda: arm_finished(jobs[-1].run_dir, jobs[-1].arm.name))
    poll()
    if status is not None and not status.succeeded:
        failed = next((job for job in jobs if not arm_finished(job.run_dir, job.arm.name)), jobs[-1])
        logs = link.logs(run_id)
        # The whole log beside the arm's results: the one-line error rarely carries the traceback.
        log_path = arm_dir(failed.run_dir, failed.arm.name) / "flower-run.log"
        atomic_write(log_path, logs.encode())
        raise FlowerError(f"arm {failed.arm.name}: run {run_id} {status.status}: {server_error(logs)} "
                          f"(log: {log_path})")


def check_data(scenario: Scenario, seeds: list[int] | None = None, ray_address: str | None = None,
               in_process: bool = False, download: bool = True) -> dict[str, Split]:
    """Refuse, before a run writes anything, arms whose clients' data cannot be split as asked (at each of
    ``seeds``); an arm on a remote Ray cluster has its data on that cluster's nodes and is not checked. A data
    set to download is fetched here, once, not by every worker at once (``download=False``: checked on its
    class counts). Returns each checked arm's split (at the first seed)."""
    address = ray_address or os.environ.get("RAY_ADDRESS")
    splits: dict[str, Split] = {}
    for seeded in [scenario.with_seed(seed) for seed in seeds] if seeds else [scenario]:
        for arm in seeded.arms.values():
            if in_process or not (arm.ray.address or address):
                splits.setdefault(arm.name, check_partitioning(arm, download))
    return splits


def simulate_runs(planned: list[Planned], progress: RunProgress = lambda *_: None,
                  ray_address: str | None = None) -> list[dict[str, Any]]:
    """Several scenarios, each into its run directory, as few Flower runs as their federations allow:
    one SuperLink per Ray cluster, one Flower run per federation (the clients' resources), whatever run
    directory or scenario its arms come from. Returns each run's final per-arm metrics."""
    # Absolute: the ServerApp runs in another process, not necessarily in this working directory.
    run_dirs = [(p.out if p.resume else prepare_run_dir(p.scenario, p.out)).resolve() for p in planned]
    ray_address = ray_address or os.environ.get("RAY_ADDRESS")
    # Ray cluster -> federation -> its arms, in the order they first appear.
    clusters: dict[str | None, dict[tuple[int, float], list[Job]]] = {}
    for index, (p, run_dir) in enumerate(zip(planned, run_dirs)):
        for arm in p.scenario.arms.values():
            if not (p.resume and arm_finished(run_dir, arm.name)):
                federations = clusters.setdefault(arm.ray.address or ray_address, {})
                federations.setdefault(federation_of(arm), []).append(Job(index, run_dir, arm, p.resume))
    with scratch("sim") as work:
        for address, federations in clusters.items():
            with SimulationSuperLink(work, address) as link:
                for jobs in federations.values():
                    run_arms(link, jobs, work, progress)
    summaries = []
    for p, run_dir in zip(planned, run_dirs):
        summary = {arm.name: (read_jsonl(arm_dir(run_dir, arm.name) / "metrics.jsonl") or [{}])[-1]
                   for arm in p.scenario.arms.values()}
        atomic_write(run_dir / "summary.yaml", yaml.safe_dump(summary, sort_keys=True).encode())
        summaries.append(summary)
    return summaries


def plan_seeds(scenario: Scenario, out: Path, seeds: list[int], resume: bool = False) -> list[Planned]:
    """Every arm once per seed, each seed a run directory ``out/seed-S`` (same split and initial weights
    for all arms of a seed); with ``resume``, seeds that started are continued (finished arms skipped)."""
    if not resume:
        if out.exists() and any(out.iterdir()):
            raise FileExistsError(f"--out: {out} exists and is not empty")
        out.mkdir(parents=True, exist_ok=True)
        atomic_json(out / SEEDS_FILE, {"seeds": seeds})
    planned = []
    for seed in seeds:
        folder = seed_dir(out, seed)
        again = resume and (folder / "scenario.yaml").is_file()
        planned.append(Planned(load_run_dir(folder) if again else scenario.with_seed(seed), folder, again))
    return planned

