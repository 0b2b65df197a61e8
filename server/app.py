"""fedmjp ServerApp: discovers partitions, runs the rounds, evaluates, writes the run directory."""

from __future__ import annotations

import time
from pathlib import Path

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

from fedmjp.audit import AuditStore
from fedmjp.rundir import append_jsonl, arm_dir, atomic_torch_save
from fedmjp.scenario import Arm, arm_from_run_config
from fedmjp.train import resolve_device
from fedmjp.workload import build_model, evaluate_global

from .adversary import AdversaryTap
from .strategy import FedMJP

app = ServerApp()


def discover_partitions(grid: Grid, expected: int, timeout: float = 600.0) -> dict[int, int]:
    """Partition id -> node id, asked of every node (node ids are random per run)."""
    deadline = time.monotonic() + timeout
    while len(nodes := sorted(grid.get_node_ids())) < expected:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(nodes)} of {expected} client nodes connected after {timeout:.0f} s")
        time.sleep(1)
    questions = [Message(content=RecordDict(), dst_node_id=n, message_type="query.partition") for n in nodes]
    mapping: dict[int, int] = {}
    for reply in grid.send_and_receive(questions, timeout=timeout):
        if not reply.has_error():
            mapping[int(reply.content["config"]["partition-id"])] = reply.metadata.src_node_id
    if len(mapping) < expected:
        raise RuntimeError(f"only {len(mapping)} of {expected} nodes reported a partition id")
    return mapping


def run_dir_of(context: Context, arm: Arm) -> Path:
    configured = str(context.run_config.get("run-dir", ""))
    return Path(configured) if configured else Path("runs") / arm.name


@app.main()
def main(grid: Grid, context: Context) -> None:
    arm = arm_from_run_config(context.run_config)
    run_dir = run_dir_of(context, arm)
    out = arm_dir(run_dir, arm.name)
    out.mkdir(parents=True, exist_ok=True)
    model = build_model(arm).to(resolve_device(arm.device))
    kind = "gradient" if arm.training.mode == "fedsgd" else "update"
    strategy = FedMJP(
        model,
        kind,
        arm.training.server_optimizer,
        arm.training.server_lr,
        discover_partitions(grid, arm.clients.num_clients),
        arm.clients.sampled_per_round,
        arm.seed,
        taps=[AdversaryTap(arm, grid, AuditStore(run_dir), model.patch_embed.patch_size[0])],
    )
    for server_round in range(1, arm.training.rounds + 1):
        started = time.perf_counter()
        arrays = ArrayRecord(model.state_dict())
        messages = strategy.configure_train(server_round, arrays, ConfigRecord(), grid)
        replies = list(grid.send_and_receive(messages))
        _, train_metrics = strategy.aggregate_train(server_round, replies)
        if train_metrics is None:
            raise RuntimeError(f"round {server_round}: no client replied with an update")
        test = evaluate_global(arm, model)
        append_jsonl(
            out / "metrics.jsonl",
            {
                "round": server_round,
                "accuracy": test["accuracy"],
                "loss": test["loss"],
                "train_loss": float(train_metrics["loss"]),
                "clients": sum(not r.has_error() for r in replies),
                "seconds": time.perf_counter() - started,
            },
        )
    atomic_torch_save(out / "final_weights.pt", {k: v.cpu() for k, v in model.state_dict().items()})
