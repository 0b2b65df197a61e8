"""Seconds per round with and without Flower's SecAgg+, side by side in one run.

1. Simulation: one `fedmjp simulate` of arms at K = 2, 4, 8 clients a round, each with SecAgg+ off and on
   (the same Ray start for all), a 2-block ViT-Ti/4, FedSGD batch 16 on the built-in photos, 3 rounds; a
   round's seconds are the mean of rounds 2 and 3 (round 1 pays the workers' first imports).
2. Loopback deployment: a real SuperLink and 2 SuperNodes (TLS, authentication) on this machine,
   `fedmjp deploy` of the same arms at K = 2.

Each table gives the load average at its start: the machine may be shared.

    python -m bench.secure_aggregation
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

from fedmjp.federation.rundir import read_jsonl
from fedmjp.launch.loopback import LoopbackDeployment

from ._report import write_markdown

ROOT = Path(__file__).resolve().parent.parent
CLIENTS = (2, 4, 8)
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


def main() -> None:
    console = Console()
    with tempfile.TemporaryDirectory() as folder:
        tables = [simulation_table(Path(folder)), deployment_table(Path(folder))]
    for table in tables:
        console.print(table)
    console.print(f"written to {write_markdown('secure_aggregation', tables)}")


if __name__ == "__main__":
    main()
