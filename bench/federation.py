"""Federation costs, measured side by side in one run:

1. the framework's overhead: `fedmjp simulate` on a CIFAR-10-subset scenario over a bare
   PyTorch loop doing the same local training for the same clients in one process; and the smallest
   scenario (ci-smoke) through Flower over `--in-process`, alone and as a sweep of seeds;
2. scale: time per round and peak memory as the number of clients grows (10 sampled per round);
3. the audit's cost: the quickstart with its audit over the quickstart without it.

FEDMJP_BENCH_SCALE="100,1000,10000,100000" sets the client counts of (2) (default 100,1000,10000).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from fedmjp.federation.aggregate import ServerOptimizer
from fedmjp.data.builtin import PHOTOS
from fedmjp.federation.rundir import read_jsonl
from fedmjp.scenario import load_scenario, parse_scenario
from fedmjp.launch.processes import processes_with_env
from fedmjp.federation.workload import build_model, client_round, evaluate_global

from ._report import write_markdown

ROOT = Path(__file__).resolve().parent.parent
CIFAR = ROOT.parent / "shared" / "data" / "cifar10-subset"
console = Console()

OVERHEAD = {
    "name": "overhead",
    "seed": 0,
    "device": "cpu",
    "data": {"source": "imagefolder", "root": str(CIFAR), "test_limit": 500},
    "clients": {"num_clients": 10, "cpus": 1},
    "training": {"rounds": 10, "mode": "fedsgd", "batch_size": 32, "server_optimizer": "adam", "server_lr": 0.001},
    "model": {"name": "vit_tiny_patch4_32"},
}


class PeakMemory:
    """Peak summed RSS (bytes) of every process carrying an environment marker."""

    def __init__(self, mark: str) -> None:
        self.mark, self.peak, self._stop = mark, 0, threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _rss(self, pid: int) -> int:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def _watch(self) -> None:
        while not self._stop.wait(0.5):
            self.peak = max(self.peak, sum(self._rss(p) for p in processes_with_env("FEDMJP_BENCH_MARK", self.mark)))

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass(frozen=True)
class Simulated:
    """One `fedmjp simulate` of one scenario: wall time, every arm's metrics lines in the order they were written,
    peak memory, and when each line appeared (seconds from launch, polled every 0.05 s)."""

    wall: float
    rows: list[dict]
    peak: int
    lines: list[float]

    @property
    def startup(self) -> float:
        """Launch to the first round's start (the first line's time less its seconds)."""
        return self.lines[0] - self.rows[0]["seconds"]

    @property
    def in_rounds(self) -> float:
        """The first round's start to the last line (rounds overlap: a round is evaluated while the next
        trains, so their seconds do not add up)."""
        return self.lines[-1] - self.startup


def simulate(scenario: dict, sets: list[str] = ()) -> Simulated:
    import yaml

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "scenario.yaml"
        path.write_text(yaml.safe_dump(scenario))
        mark = uuid.uuid4().hex
        command = [sys.executable, "-m", "fedmjp", "simulate", str(path), "--out", f"{tmp}/run", "--json",
                   *[a for s in sets for a in ("--set", s)]]
        start = time.perf_counter()
        arrived: list[tuple[float, dict]] = []
        seen: dict[Path, int] = {}

        def collect(now: float) -> None:
            """The lines written since the last look, each with the time it was seen."""
            for metrics in sorted(Path(tmp, "run", "arms").glob("*/metrics.jsonl")):
                rows = read_jsonl(metrics)
                arrived.extend((now, row) for row in rows[seen.get(metrics, 0):])
                seen[metrics] = len(rows)

        with PeakMemory(mark) as memory:
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                       env={**os.environ, "FEDMJP_BENCH_MARK": mark})
            while process.poll() is None:
                collect(time.perf_counter() - start)
                time.sleep(0.05)
        seconds = time.perf_counter() - start
        if process.returncode != 0:
            raise subprocess.CalledProcessError(process.returncode, command, stderr=process.stderr.read())
        collect(seconds)  # written after the last poll
        return Simulated(seconds, [row for _, row in arrived], memory.peak, [t for t, _ in arrived])


def bare_loop(scenario: dict) -> tuple[float, list[float]]:
    """The same rounds in one process, no Flower, no Ray: each samples its clients as the strategy does, trains
    them, steps the server and evaluates. Wall time, and each round's seconds."""
    arm = parse_scenario(scenario).arms["run"]
    start = time.perf_counter()
    model = build_model(arm)
    server = ServerOptimizer(model, "gradient", arm.training.server_optimizer, arm.training.server_lr)
    sampler, rounds = random.Random(arm.seed), []
    for server_round in range(1, arm.training.rounds + 1):
        began = time.perf_counter()
        weights = {k: v.clone() for k, v in model.state_dict().items()}
        chosen = sorted(sampler.sample(range(arm.clients.num_clients), arm.clients.sampled_per_round))
        results = [client_round(arm, weights, p, server_round).result for p in chosen]
        server.step([r.tensors for r in results], [r.num_examples for r in results])
        evaluate_global(arm, model)
        rounds.append(time.perf_counter() - began)
    return time.perf_counter() - start, rounds


def overhead_table() -> Table:
    run = simulate(OVERHEAD)
    simulated, in_rounds = run.wall, run.in_rounds
    bare, _ = bare_loop(OVERHEAD)
    table = Table(title="framework overhead: 10 clients x 10 rounds, ViT-Ti/4 (12 blocks), FedSGD batch 32, CIFAR-10")
    for column in ("what", "seconds", "over bare loop"):
        table.add_column(column, justify="left" if column == "what" else "right")
    table.add_row("bare PyTorch loop, one process", f"{bare:.1f}", "1.00")
    table.add_row("fedmjp simulate (wall)", f"{simulated:.1f}", f"{simulated / bare:.2f}")
    table.add_row("  of which inside the rounds", f"{in_rounds:.1f}", f"{in_rounds / bare:.2f}")
    table.add_row("  start-up, shut-down, polling", f"{simulated - in_rounds:.1f}", "")
    return table


def cli_seconds(*args: str) -> float:
    """Wall time of one `fedmjp` command (its output discarded), from launch to exit."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "fedmjp", *args, "--out", f"{tmp}/run", "--json"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return time.perf_counter() - start


def smoke_table() -> Table:
    """ci-smoke (2 clients, 2 rounds, 2-block ViT on digits) through Flower and Ray (each run starts its own Ray)
    over the same rounds --in-process; three seeds as one sweep (one Flower run) and as three runs."""
    smoke = str(ROOT / "scenarios" / "ci-smoke.yaml")
    in_process = cli_seconds("simulate", smoke, "--in-process")
    flower = cli_seconds("simulate", smoke)
    seeds_in_process = cli_seconds("simulate", smoke, "--in-process", "--seeds", "0,1,2")
    seeds_sweep = cli_seconds("simulate", smoke, "--seeds", "0,1,2")
    seeds_apart = sum(cli_seconds("simulate", smoke, "--seeds", str(seed)) for seed in (0, 1, 2))
    table = Table(title="ci-smoke: fedmjp simulate through Flower over --in-process (wall, launch to exit)")
    for column in ("run", "seconds", "over in-process"):
        table.add_column(column, justify="left" if column == "run" else "right")
    table.add_row("--in-process, seed 0", f"{in_process:.1f}", "1.00")
    table.add_row("Flower + Ray, seed 0", f"{flower:.1f}", f"{flower / in_process:.2f}")
    table.add_row("--in-process, seeds 0,1,2", f"{seeds_in_process:.1f}", "1.00")
    table.add_row("Flower + Ray, seeds 0,1,2 as one sweep", f"{seeds_sweep:.1f}", f"{seeds_sweep / seeds_in_process:.2f}")
    table.add_row("Flower + Ray, seeds 0,1,2 as three runs", f"{seeds_apart:.1f}", f"{seeds_apart / seeds_in_process:.2f}")
    return table


# Three rounds (two intervals between lines) read 0.30 to 0.38 s a round at 10,000 clients where eight read
# 0.48 to 0.52 s: the first lines come unevenly. The steady state is measured over rounds 3 to 8.
SCALE_ROUNDS = 8
STEADY_FROM = 3


def scale_data(count: int) -> tuple[dict, str]:
    """The CIFAR-10 subset while it has an example per client, else enough seeded photo crops."""
    if CIFAR.is_dir() and sum(1 for f in (CIFAR / "train").rglob("*") if f.is_file()) >= count:
        return {"source": "imagefolder", "root": str(CIFAR), "test_limit": 100}, "CIFAR-10 subset"
    crops = max(100, -(-count // (len(PHOTOS) * 4)) * 5)  # 80% of the crops train: one per client at least
    return {"source": "photos", "test_limit": 80, "crops_per_photo": crops}, f"photos, {crops} crops each"


def scale_table(counts: list[int]) -> Table:
    """Start-up, time per round and peak memory as the population grows, 10 clients a round; beside each, a bare
    loop doing the same rounds (the same 10 sampled clients' training, step and evaluation) in one process."""
    table = Table(title=f"scale: 10 clients sampled per round, {SCALE_ROUNDS} rounds, ViT-Ti/4 (2 blocks), FedSGD "
                        f"batch 16; s/round: the mean time between the lines of rounds {STEADY_FROM}-{SCALE_ROUNDS} "
                        "(round 1 carries the workers' imports, round 2's line waits on round 1's close)")
    for column in ("clients", "data", "start-up s", "s/round", "bare loop s/round", "over bare", "round 1 s",
                   "wall s", "peak memory GiB"):
        table.add_column(column, justify="left" if column == "data" else "right")
    for count in counts:
        data, label = scale_data(count)
        scenario = {**OVERHEAD, "data": data, "clients": {"num_clients": count, "per_round": 10, "cpus": 1},
                    "training": {**OVERHEAD["training"], "rounds": SCALE_ROUNDS, "batch_size": 16},
                    "model": {"name": "vit_tiny_patch4_32", "kwargs": {"depth": 2}}}
        try:
            run = simulate(scenario)
        except subprocess.CalledProcessError as exc:
            table.add_row(str(count), label, "failed", "", "", "", "", "", exc.stderr.decode()[-80:])
            continue
        # Rounds overlap (a round's evaluation runs while the next trains): the time between lines is a round's.
        steady = run.lines[STEADY_FROM - 2:]
        per_round = (steady[-1] - steady[0]) / (len(steady) - 1)
        _, bare = bare_loop(scenario)
        bare_round = sum(bare[STEADY_FROM - 1:]) / len(bare[STEADY_FROM - 1:])
        table.add_row(str(count), label, f"{run.startup:.1f}", f"{per_round:.2f}", f"{bare_round:.2f}",
                      f"{per_round / bare_round:.2f}", f"{run.rows[0]['seconds']:.2f}", f"{run.wall:.0f}",
                      f"{run.peak / 2**30:.2f}")
    return table


def audit_table() -> Table:
    quickstart = load_scenario(ROOT / "scenarios" / "quickstart.yaml")
    raw = {"name": "quickstart", "arms": {n: a.model_dump(mode="json") for n, a in quickstart.arms.items()}}
    audited = simulate(raw)
    plain = simulate(raw, [f"arms.{n}.audit.attacks=[]" for n in quickstart.arms])
    table = Table(title="the audit's cost: quickstart (2 arms x 3 rounds x 2 clients, april on every update)")
    for column in ("run", "wall s", "s in rounds", "ratio (wall)"):
        table.add_column(column, justify="left" if column == "run" else "right")
    table.add_row("without audit", f"{plain.wall:.1f}", f"{plain.in_rounds:.1f}", "1.00")
    table.add_row("with audit", f"{audited.wall:.1f}", f"{audited.in_rounds:.1f}", f"{audited.wall / plain.wall:.2f}")
    return table


def checkpoint_table() -> Table:
    """What the per-round checkpoint costs: the copy of the server's state on the round's path, and the atomic
    save (model, Adam state, sampler) that runs while the next round trains."""
    import timm

    from fedmjp.federation import checkpoint

    table = Table(title="per-round checkpoint: copy on the round's path, atomic save beside the next round; "
                        "median of 5")
    for column in ("model", "MB", "ms to copy (on the path)", "ms to save (beside)"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name in ("vit_tiny_patch4_32", "vit_small_patch16_224", "vit_base_patch16_224"):
        model = timm.create_model(name)
        optimizer = ServerOptimizer(model, "gradient", "adam", 1e-3)
        optimizer.step([{n: torch.zeros_like(p) for n, p in optimizer.params.items()}], [1.0])
        with tempfile.TemporaryDirectory() as tmp:
            path, copies, saves = Path(tmp) / "checkpoint.pt", [], []
            for _ in range(5):
                start = time.perf_counter()
                state = checkpoint.snapshot(1, model, optimizer, random.Random(0).getstate(), path, path)
                copied = time.perf_counter()
                checkpoint.save(path, state)
                copies.append(copied - start)
                saves.append(time.perf_counter() - copied)
            size = path.stat().st_size / 2**20
        table.add_row(name, f"{size:.0f}", f"{1000 * sorted(copies)[2]:.0f}", f"{1000 * sorted(saves)[2]:.0f}")
    return table


def main() -> None:
    tables = [smoke_table()]
    if CIFAR.is_dir():
        tables.append(overhead_table())
    else:
        console.print(f"skipped the overhead run: {CIFAR} not found")
    counts = [int(c) for c in os.environ.get("FEDMJP_BENCH_SCALE", "100,1000,10000").split(",")]
    tables += [checkpoint_table(), scale_table(counts), audit_table()]
    for table in tables:
        console.print(table)
    write_markdown("federation", tables)


if __name__ == "__main__":
    main()
