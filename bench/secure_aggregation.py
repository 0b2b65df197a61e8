"""Seconds per round with and without Flower's SecAgg+, side by side in one run.

1. Simulation: one `fedmjp simulate` of arms at K = 2, 4, 8 clients a round, each with SecAgg+ off and on
   (the same Ray start for all), a 2-block ViT-Ti/4, FedSGD batch 16 on the built-in photos, 3 rounds; a
   round's seconds are the mean of rounds 2 and 3 (round 1 pays the workers' first imports).
2. Loopback deployment: a real SuperLink and 2 SuperNodes (TLS, authentication) on this machine,
   `fedmjp deploy` of the same arms at K = 2.
3. What SecAgg+'s arithmetic costs the planting server: imprint on the plain mean of 4 clients' replies (4 CIFAR-10
   subset images each, the clients' own batches of rounds 1 to ROUNDS, ViT-Ti/4 at init) against the same replies
   through SecAgg+'s fixed-point arithmetic (Flower's own quantize / dequantize, each client's stochastic rounding
   seeded as the client seeds it; the masks are left out: they cancel exactly in the sum), with the settings the
   planting server tunes and with Flower's defaults. `fedmjp simulate` of the same federation runs the protocol
   itself: its rounds 1 to 3 read what this table's SecAgg+ rows read.

Each table gives the load average at its start: the machine may be shared.

    python -m bench.secure_aggregation
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import yaml
from flwr.common.secure_aggregation.quantization import dequantize, quantize
from rich.console import Console
from rich.table import Table

from fedmjp.audit.adversary import Adversary
from fedmjp.federation.rundir import read_jsonl
from fedmjp.federation.workload import build_model, client_round, dataset, derive_seed, stack
from fedmjp.launch.loopback import LoopbackDeployment
from fedmjp.scenario import SecureAggregation, parse_scenario
from fedmjp.scoring.batch_metrics import patch_recovery

from ._report import write_markdown

ROOT = Path(__file__).resolve().parent.parent
CIFAR = ROOT.parent / "shared" / "data" / "cifar10-subset"
CLIENTS = (2, 4, 8)
IMPRINT_CLIENTS, IMPRINT_BATCH, IMPRINT_ROUNDS = 4, 4, 5
BASE = {
    "seed": 0,
    "device": "cpu",
    "data": {"source": "photos", "test_limit": 40},
    "clients": {"num_clients": max(CLIENTS), "cpus": 1},
    "training": {"rounds": 3, "mode": "fedsgd", "batch_size": 16, "server_optimizer": "adam", "server_lr": 0.001},
    "model": {"name": "vit_tiny_patch4_32", "kwargs": {"depth": 2}},
}


def arms(clients: tuple[int, ...]) -> dict[str, dict]:
    return {f"k{k}-{mode}": {"clients": {"num_clients": k},
                             "training": {"secure_aggregation": {"enabled": mode == "secagg"}}}
            for k in clients for mode in ("plain", "secagg")}


def round_seconds(run: Path, arm: str) -> float:
    rows = read_jsonl(run / "arms" / arm / "metrics.jsonl")
    later = [r["seconds"] for r in rows[1:]] or [rows[0]["seconds"]]
    return sum(later) / len(later)


def seconds_table(title: str, run: Path, clients: tuple[int, ...], load: float) -> Table:
    table = Table(title=f"{title} (load average {load:.2f} at the start)")
    for column in ("clients a round", "plain s/round", "SecAgg+ s/round", "SecAgg+ / plain"):
        table.add_column(column, justify="right")
    for k in clients:
        plain, secure = round_seconds(run, f"k{k}-plain"), round_seconds(run, f"k{k}-secagg")
        table.add_row(str(k), f"{plain:.2f}", f"{secure:.2f}", f"{secure / plain:.2f}")
    return table


def simulation_table(tmp: Path) -> Table:
    load = os.getloadavg()[0]
    path = tmp / "simulation.yaml"
    path.write_text(yaml.safe_dump({**BASE, "name": "secagg-simulation", "arms": arms(CLIENTS)}))
    subprocess.run([sys.executable, "-m", "fedmjp", "simulate", str(path), "--out", str(tmp / "sim"), "--json"],
                   check=True, capture_output=True, text=True)
    return seconds_table("seconds per round in simulation, 2-block ViT-Ti/4, FedSGD batch 16", tmp / "sim",
                         CLIENTS, load)


def deployment_table(tmp: Path) -> Table:
    load = os.getloadavg()[0]
    certs = tmp / "certs"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_certs.py"), str(certs), "--nodes", "2"],
                   check=True, capture_output=True)
    path = tmp / "deployment.yaml"
    path.write_text(yaml.safe_dump({**BASE, "name": "secagg-deployment", "clients": {"num_clients": 2},
                                    "arms": arms((2,))}))
    with LoopbackDeployment(tmp / "work", certs).start(2) as deployment:
        subprocess.run([sys.executable, "-m", "fedmjp", "deploy", str(path), "--superlink", deployment.address,
                        "--root-certificates", str(certs / "ca.crt"), "--out", str(tmp / "deployed"), "--json"],
                       check=True, capture_output=True, text=True)
    return seconds_table("seconds per round in the loopback deployment (SuperLink and 2 SuperNodes, TLS)",
                         tmp / "deployed", (2,), load)


def secagg_arithmetic(replies: list[dict[str, torch.Tensor]], counts: list[int], settings: SecureAggregation,
                      seeds: list[int]) -> dict[str, torch.Tensor]:
    """The aggregate SecAgg+ unmasks from these replies: each scaled by its quantized weight, clipped, rounded
    stochastically (NumPy's generator seeded per client, as the client does), summed, dequantized, divided by
    the weights' sum (flwr.server.workflow.secure_aggregation.secaggplus_workflow's unmask stage)."""
    q, c = settings.quantization_range, settings.clipping_range
    names = sorted(replies[0])
    total: list[np.ndarray] | None = None
    ratios = 0
    for reply, count, seed in zip(replies, counts, seeds):
        ratio = round(count / settings.max_weight * q)
        ratios += ratio
        np.random.seed(seed % 2**32)
        scaled = [reply[n].numpy() * (ratio / q) for n in names]  # float32, as the client scales it
        quantized = [a.astype(np.int64) for a in quantize(scaled, c, q)]
        total = quantized if total is None else [t + a for t, a in zip(total, quantized)]
    assert total is not None
    summed = dequantize(total, c, q)
    return {n: torch.from_numpy((a - (len(replies) - 1) * c) * q / ratios).float() for n, a in zip(names, summed)}


def imprint_table() -> Table:
    table = Table(title=f"imprint through SecAgg+'s arithmetic, {IMPRINT_CLIENTS} clients x {IMPRINT_BATCH} CIFAR-10 "
                        f"subset images, ViT-Ti/4 at init: share of each client's patches read exactly, mean of the "
                        f"clients (load average {os.getloadavg()[0]:.2f} at the start)")
    for column in ("arm", "round", "plain mean", "SecAgg+, tuned by the server", "SecAgg+, Flower's defaults"):
        table.add_column(column, justify="left" if column == "arm" else "right")
    if not CIFAR.is_dir():
        table.add_row("skipped", f"{CIFAR} not present", "", "", "")
        return table
    for label, name, mjp in (("ViT", "vit_tiny_patch4_32", None), ("MJP 0.25", "mjp_vit_tiny_patch4_32", 0.25)):
        arm = parse_scenario({
            "name": "imprint", "seed": 0, "device": "cpu",
            "data": {"source": "cifar10", "root": str(CIFAR), "test_limit": 40},
            "clients": {"num_clients": IMPRINT_CLIENTS},
            "training": {"mode": "fedsgd", "batch_size": IMPRINT_BATCH, "secure_aggregation": {"enabled": True}},
            "model": {"name": name, **({"mjp": {"ratio": mjp}} if mjp else {})},
            "audit": {"server": {"kind": "imprint", "clients": "all", "images": {"source": "photos"}}}}).arms["run"]
        adversary = Adversary(arm)
        weights = adversary.plant(build_model(arm).state_dict())
        tuned = adversary.tuned_secure_aggregation(weights, arm.training.secure_aggregation, IMPRINT_CLIENTS, 1)
        data = dataset(arm, "train")
        shares: dict[str, list[float]] = {"plain": [], "tuned": [], "defaults": []}
        for server_round in range(1, IMPRINT_ROUNDS + 1):
            rounds = [client_round(arm, weights, p, server_round) for p in range(IMPRINT_CLIENTS)]
            replies, counts = [r.result.tensors for r in rounds], [r.result.num_examples for r in rounds]
            seeds = [derive_seed(arm.seed, "secure-aggregation", server_round, p) for p in range(IMPRINT_CLIENTS)]
            aggregates = {"plain": {n: sum(r[n] * k for r, k in zip(replies, counts)) / sum(counts) for n in replies[0]},
                          "tuned": secagg_arithmetic(replies, counts, tuned, seeds),
                          "defaults": secagg_arithmetic(replies, counts, arm.training.secure_aggregation, seeds)}
            cells = [str(server_round)]
            for key, aggregate in aggregates.items():
                obs = adversary.observation(weights, aggregate, sum(counts), server_round)
                rec = adversary.run_planted(obs)[0].reconstruction
                exact = [patch_recovery(rec.patches, rec.patch_positions, stack(data, r.batches[0])[0], 4)
                         ["patches_exact"] for r in rounds]
                shares[key].append(float(np.mean(exact)))
                cells.append(f"{shares[key][-1]:.3f}")
            table.add_row(label, *cells)
        table.add_row(label, "mean", *(f"{np.mean(v):.3f}" for v in shares.values()))
    return table


def main() -> None:
    console = Console()
    with tempfile.TemporaryDirectory() as folder:
        tables = [simulation_table(Path(folder)), deployment_table(Path(folder)), imprint_table()]
    for table in tables:
        console.print(table)
    console.print(f"written to {write_markdown('secure_aggregation', tables)}")


if __name__ == "__main__":
    main()
