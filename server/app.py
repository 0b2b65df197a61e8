"""fedmjp ServerApp: discovers partitions, runs each arm's rounds, evaluates, writes the run directory."""

from __future__ import annotations

import time
from pathlib import Path

from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp

from fedmjp import checkpoint
from fedmjp.audit import AuditRecord, AuditStore
from fedmjp.rundir import append_jsonl, arm_dir, atomic_torch_save
from fedmjp.runconfig import ARM_KEY, arms_from_run_config
from fedmjp.scenario import Arm
from fedmjp.train import resolve_device
from fedmjp.workload import build_model, evaluate_global

from .adversary import AdversaryTap
from .exchange import send_and_receive
from .partitions import Partitions, find_partitions
from .strategy import FedMJP

app = ServerApp()


def run_dir_of(context: Context, arm: Arm) -> Path:
    configured = str(context.run_config.get("run-dir", ""))
    return Path(configured) if configured else Path("runs") / arm.name


class RunStopped(RuntimeError):
    """A round had fewer usable replies than the scenario's minimum."""


def record_faults(store: AuditStore, arm: Arm, server_round: int, faults: list[tuple[int, str]]) -> None:
    for partition_id, reason in faults:
        store.append(AuditRecord(arm=arm.name, round=server_round, partition_id=partition_id, attack="none",
                                 status="fault", source="fault", reason=reason))


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the arms of the run config one after the other on the same nodes."""
    arms = list(arms_from_run_config(context.run_config).values())
    sizes = {arm.clients.num_clients for arm in arms}
    if len(sizes) != 1:
        raise ValueError(f"the arms of one run must share clients.num_clients (got {sorted(sizes)})")
    partitions = find_partitions(grid, sizes.pop())
    for arm in arms:
        run_arm(grid, context, arm, partitions)


def run_arm(grid: Grid, context: Context, arm: Arm, partitions: Partitions) -> None:
    run_dir = run_dir_of(context, arm)
    out = arm_dir(run_dir, arm.name)
    out.mkdir(parents=True, exist_ok=True)
    store = AuditStore(run_dir)
    model = build_model(arm).to(resolve_device(arm.device))
    kind = "gradient" if arm.training.mode == "fedsgd" else "update"
    strategy = FedMJP(
        model,
        kind,
        arm.training.server_optimizer,
        arm.training.server_lr,
        partitions.nodes,
        arm.clients.sampled_per_round,
        arm.seed,
        taps=[AdversaryTap(arm, grid, store, model.patch_embed.patch_size[0])],
        min_replies=arm.clients.min_per_round,
    )
    metrics_path, checkpoint_path = out / "metrics.jsonl", out / "checkpoint.pt"
    first = 1
    if bool(context.run_config.get("resume", False)) and (saved := checkpoint.load(checkpoint_path)):
        model.load_state_dict(saved.model)
        strategy.optimizer.load_state_dict(saved.optimizer)
        strategy.sampler.setstate(saved.sampler)
        checkpoint.cut_back(metrics_path, saved.metrics_bytes)
        checkpoint.cut_back(store.records_path, saved.audit_bytes)
        first = saved.round + 1
    for server_round in range(first, arm.training.rounds + 1):
        started = time.perf_counter()
        arrays = ArrayRecord(model.state_dict())
        messages = strategy.configure_train(server_round, arrays, ConfigRecord({ARM_KEY: arm.name}), grid)
        replies = send_and_receive(grid, partitions.address(messages), timeout=arm.clients.timeout)
        _, train_metrics = strategy.aggregate_train(server_round, replies)
        record_faults(store, arm, server_round, strategy.faults)
        if train_metrics is None:
            reasons = "; ".join(f"partition {p}: {r}" for p, r in strategy.faults) or "no replies"
            raise RunStopped(f"round {server_round}: fewer than clients.min_per_round "
                             f"({arm.clients.min_per_round}) usable replies ({reasons})")
        test = evaluate_global(arm, model)
        append_jsonl(
            metrics_path,
            {
                "round": server_round,
                "accuracy": test["accuracy"],
                "loss": test["loss"],
                "train_loss": float(train_metrics["loss"]),
                "clients": len(strategy.sampled) - len(strategy.faults),
                "faults": [{"partition_id": p, "reason": r} for p, r in strategy.faults],
                "seconds": time.perf_counter() - started,
            },
        )
        checkpoint.save(checkpoint_path, server_round, model, strategy.optimizer,
                        strategy.sampler.getstate(), metrics_path, store.records_path)
    atomic_torch_save(out / "final_weights.pt", {k: v.cpu() for k, v in model.state_dict().items()})
