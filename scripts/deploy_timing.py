#!/usr/bin/env python3
"""Time per round, deployment over simulation, for one scenario, and where the difference goes.

    python scripts/deploy_timing.py [SCENARIO] [--json]

Runs SCENARIO (default: a 2-client, 2-round APRIL audit of a 2-block ViT-Ti on photos) with
``fedmjp simulate`` and with ``fedmjp deploy`` against a real loopback deployment (SuperLink
with TLS and SuperNode authentication, two SuperNodes), then reads the SuperNodes' time-stamped
logs: how long each message spent on a node (pull to reply, including the ClientApp process
start), the first message's FAB install, and the cost of a cold ClientApp import.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fedmjp.federation.rundir import read_jsonl  # noqa: E402
from fedmjp.launch.flower_config import FAST_POLL_ENV  # noqa: E402
from server.exchange import INTERVAL  # noqa: E402
from fedmjp.launch.loopback import LoopbackDeployment  # noqa: E402

SCENARIO = {
    "name": "timing", "seed": 0, "device": "cpu",
    "data": {"source": "photos", "test_limit": 40},
    "clients": {"num_clients": 2, "cpus": 1},
    "training": {"rounds": 2, "mode": "fedsgd", "batch_size": 1, "server_optimizer": "adam", "server_lr": 0.001},
    "model": {"name": "vit_tiny_patch4_32", "kwargs": {"depth": 2}},
    "audit": {"attacks": [{"name": "april"}], "clients": "all"},
}
LINE = re.compile(r"^(\d+\.\d+) .*?(Receiving|Sending): (\S+) message")


def fedmjp(*args: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "fedmjp", *args, "--json"], capture_output=True, text=True,
                          timeout=3600, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def node_messages(log: str) -> list[tuple[str, float, float]]:
    """(message type, received at, reply sent at) from a SuperNode's stamped log."""
    out, pending = [], {}
    for line in log.splitlines():
        if m := LINE.match(line):
            stamp, what, kind = float(m.group(1)), m.group(2), m.group(3)
            if what == "Receiving":
                pending[kind] = stamp
            elif kind in pending:
                out.append((kind, pending.pop(kind), stamp))
    return out


def fab_install_seconds(log: str) -> float | None:
    """From the first message's arrival to 'Successfully installed' (fetch + unpack of the FAB)."""
    first = installed = None
    for line in log.splitlines():
        stamp = float(line.split(" ", 1)[0]) if line[:1].isdigit() else None
        if first is None and "Receiving:" in line:
            first = stamp
        if "Successfully installed" in line:
            installed = stamp
            break
    return None if first is None or installed is None else round(installed - first, 2)


# What a cold ClientApp process would import for each kind of message (clients/app.py defers the rest);
# the loopback SuperNodes run through clients.launcher, whose forked tasks find them imported.
COLD_IMPORTS = {
    "partition query": "import clients.app",
    "train": "import clients.app, clients.defence_mods, fedmjp.federation.faults, fedmjp.federation.workload",
    "receipt": "import clients.app, fedmjp.audit.receipt, fedmjp.federation.workload",
}


def cold_import_seconds(code: str, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=300)
        times.append(time.perf_counter() - started)
    return round(statistics.median(times), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario", nargs="?", type=Path)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    figures: dict = {"load_average_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="fedmjp-timing-") as tmp:
        tmp = Path(tmp)
        scenario = args.scenario or tmp / "scenario.yaml"
        if args.scenario is None:
            scenario.write_text(yaml.safe_dump(SCENARIO))
        started = time.perf_counter()
        sim = fedmjp("simulate", str(scenario), "--out", str(tmp / "sim"))
        figures["simulate_total_s"] = time.perf_counter() - started
        arm = next(iter(sim["arms"]))
        figures["simulate_round_s"] = [r["seconds"] for r in read_jsonl(tmp / "sim" / "arms" / arm / "metrics.jsonl")]

        subprocess.run([sys.executable, str(ROOT / "scripts" / "make_certs.py"), str(tmp / "certs"), "--nodes", "2"],
                       check=True, capture_output=True)
        (tmp / "work").mkdir()
        with LoopbackDeployment(tmp / "work", tmp / "certs") as deployment:
            started = time.perf_counter()
            deployment.start(nodes=2)
            figures["deployment_start_s"] = time.perf_counter() - started
            started = time.perf_counter()
            fedmjp("deploy", str(scenario), "--superlink", deployment.address, "--root-certificates",
                   str(tmp / "certs" / "ca.crt"), "--out", str(tmp / "dep"))
            figures["deploy_total_s"] = time.perf_counter() - started
            logs = [deployment.log(f"supernode-{k}") for k in (1, 2)]
        figures["deploy_round_s"] = [r["seconds"] for r in read_jsonl(tmp / "dep" / "arms" / arm / "metrics.jsonl")]
        per_kind: dict[str, list[float]] = {}
        for log in logs:
            for kind, received, sent in node_messages(log):
                per_kind.setdefault(kind, []).append(sent - received)
        figures["node_seconds_per_message"] = {k: round(statistics.median(v), 2) for k, v in per_kind.items()}
        figures["messages_per_node"] = {k: len(v) // 2 for k, v in per_kind.items()}
        app = [f for f in (tmp / "work" / "home-supernode-1" / "apps").rglob("*") if f.is_file()]
        figures["fab_files"], figures["fab_bytes_unpacked"] = len(app), sum(f.stat().st_size for f in app)
        figures["fab_install_s"] = fab_install_seconds(logs[0])
    figures["cold_clientapp_import_s"] = {kind: cold_import_seconds(code) for kind, code in COLD_IMPORTS.items()}
    figures["load_average_after"] = os.getloadavg()
    # The SuperNode's 3 s is hard-coded in Flower 1.42 (flwr/supernode/start_client_internal.py).
    figures["poll_interval_s"] = {"supernode pull": 3.0, "serverapp exchange": INTERVAL,
                                  "superexec tasks": float(FAST_POLL_ENV["FLWR_SUPEREXEC_TASK_POLL_INTERVAL"])}
    sim_round = statistics.mean(figures["simulate_round_s"])
    dep_round = statistics.mean(figures["deploy_round_s"])
    figures["ratio_deploy_over_simulate"] = dep_round / sim_round
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"simulation: {sim_round:.1f} s/round {figures['simulate_round_s']}")
    print(f"deployment: {dep_round:.1f} s/round {figures['deploy_round_s']}  ({figures['ratio_deploy_over_simulate']:.1f}x)")
    print(f"on a SuperNode, pull to reply (median): {figures['node_seconds_per_message']}")
    print(f"messages per node per run: {figures['messages_per_node']}")
    print(f"cold ClientApp import per message type (what clients.launcher saves each message), s: {figures['cold_clientapp_import_s']}")
    print(f"FAB: {figures['fab_files']} files, {figures['fab_bytes_unpacked']} bytes, installed in "
          f"{figures['fab_install_s']} s; polling (s): {figures['poll_interval_s']}")
    print(f"load average (1, 5, 15 min) before {figures['load_average_before']}, after {figures['load_average_after']}")


if __name__ == "__main__":
    main()
