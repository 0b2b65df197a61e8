"""One arm's rounds on the server, top to bottom (``run_round``): send the global weights to the sampled
clients, collect their replies, check them (usable / faults), audit them (the curious server attacks before
it aggregates; clients score the reconstructions by receipts), aggregate the usable ones into the global
model; then close the round: evaluate the model, record the round and checkpoint it (``server.closing``:
while the next round trains, unless the evaluation is federated, which checks its replies as training does).
"""

from __future__ import annotations

import time
from logging import INFO, WARNING
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid

from fedmjp.federation import checkpoint
from fedmjp.audit import AuditStore
from fedmjp.audit.records import Fault, append_fault_records
from fedmjp.federation.rundir import arm_dir, atomic_torch_save
from fedmjp.federation.runconfig import RunArm
from fedmjp.federation.secure_aggregation import precision_warnings
from fedmjp.protocol import ACCURACY, ARM, LOSS, METRICS
from fedmjp.scenario import Arm
from fedmjp.federation.train import reply_kind, resolve_device
from fedmjp.federation.workload import build_model, server_evaluates

from .adversary import RoundAuditor
from .closing import Closer, Evaluation, RoundEnd
from .exchange import send_and_receive
from .partitions import Partitions
from .secure_aggregation import secure_round
from .strategy import FedMJP


def run_dir_of(entry: RunArm) -> Path:
    """The run config's run directory; a plain `flwr run` (none given) gets a new runs/ARM-TIME of its own."""
    return Path(entry.run_dir) if entry.run_dir else Path("runs") / f"{entry.arm.name}-{time.strftime('%Y%m%d-%H%M%S')}"


class RunStopped(RuntimeError):
    """A round had fewer usable replies than the scenario's minimum."""


@dataclass
class ArmRun:
    """Everything one arm's rounds share: the global model, the strategy, the audit, the files."""

    arm: Arm
    key: str  # how the run's messages name the arm
    grid: Grid
    model: torch.nn.Module
    strategy: FedMJP
    auditor: RoundAuditor
    store: AuditStore
    out: Path
    on_server: bool
    partitions: Partitions

    @property
    def metrics_path(self) -> Path:
        return self.out / "metrics.jsonl"

    @property
    def checkpoint_path(self) -> Path:
        return self.out / "checkpoint.pt"


def run_arm(grid: Grid, entry: RunArm, partitions: Partitions) -> None:
    run = open_arm(grid, entry, partitions)
    first = resume_or_start(run, entry.resume)
    with Closer(run) as closer:
        for server_round in range(first, entry.arm.training.rounds + 1):
            closer.close(run_round(run, server_round))
    atomic_torch_save(run.out / "final_weights.pt", {k: v.cpu() for k, v in run.model.state_dict().items()})
    # A plain `flwr run` prints no summary of its own: say where the arm's files are.
    log(INFO, "arm %s finished: %d round(s) in %s", entry.arm.name, entry.arm.training.rounds, run.out.resolve())


def open_arm(grid: Grid, entry: RunArm, partitions: Partitions) -> ArmRun:
    arm, run_dir = entry.arm, run_dir_of(entry)
    out = arm_dir(run_dir, arm.name)
    out.mkdir(parents=True, exist_ok=True)
    store = AuditStore(run_dir)
    model = build_model(arm).to(resolve_device(arm.device))
    t = arm.training
    strategy = FedMJP(model, reply_kind(t.mode), t.server_optimizer, t.server_lr, partitions.nodes,
                      arm.clients.sampled_per_round, arm.seed, min_replies=arm.clients.min_per_round)
    auditor = RoundAuditor(arm, entry.key, grid, store, model.patch_embed.patch_size[0])
    return ArmRun(arm, entry.key, grid, model, strategy, auditor, store, out, server_evaluates(arm), partitions)


def resume_or_start(run: ArmRun, resume: bool) -> int:
    """The first round to run. A fresh arm checkpoints "round 0" before its first round, so a crash
    anywhere in round 1 is cut back to the files as they were when the arm started."""
    if resume and (saved := checkpoint.load(run.checkpoint_path)):
        run.model.load_state_dict(saved.model)
        run.strategy.optimizer.load_state_dict(saved.optimizer)
        run.strategy.sampler.setstate(saved.sampler)
        checkpoint.cut_back(run.metrics_path, saved.metrics_bytes)
        checkpoint.cut_back(run.store.records_path, saved.audit_bytes)
        return saved.round + 1
    checkpoint.save(run.checkpoint_path, state_now(run, 0))
    return 1


def run_round(run: ArmRun, server_round: int) -> RoundEnd:
    """send (planted weights to a dishonest round's targets) -> train: collect, check, audit, aggregate (honest
    replies; under SecAgg+ the server sees their sum only) -> federated evaluation, where the clients evaluate;
    returns the round for closing."""
    started = time.perf_counter()
    sent = ArrayRecord(run.model.state_dict())
    messages = run.strategy.configure_train(server_round, sent, ConfigRecord({ARM: run.key}))
    messages, planted = run.auditor.plant(server_round, messages, run.strategy.node_partitions)
    secure = run.arm.training.secure_aggregation.enabled
    trained = (train_secure if secure else train)(run, server_round, sent, messages, planted)
    test = None if run.on_server else evaluate_federated(run, server_round, trained.partitions)
    return RoundEnd(server_round, started, trained, state_now(run, server_round), test)


def state_now(run: ArmRun, server_round: int) -> checkpoint.Checkpoint:
    return checkpoint.snapshot(server_round, run.model, run.strategy.optimizer, run.strategy.sampler.getstate(),
                               run.metrics_path, run.store.records_path)


@dataclass(frozen=True)
class Trained:
    """A round's training exchange: the clients' mean metrics, whose replies were usable and whose were
    aggregated, the faults, and what else the round's metrics line carries."""

    metrics: MetricRecord
    partitions: list[int]
    aggregated: list[int]
    faults: list[Fault]
    extra: dict[str, Any] = field(default_factory=dict)


def train(run: ArmRun, server_round: int, sent: ArrayRecord, messages: list[Message],
          planted: dict[int, dict[str, torch.Tensor]]) -> Trained:
    """collect -> check -> audit (each reply) -> aggregate the honest replies."""
    replies = send_and_receive(run.grid, run.partitions.address(messages), timeout=run.arm.clients.timeout)
    checked = run.strategy.check_replies(messages, replies)
    run.auditor.audit(server_round, sent, checked, planted)
    # Replies to planted weights are the adversary's alone: training continues from the real global model,
    # which a round that planted every usable reply leaves as it was.
    honest = [r for r in checked.usable if r.partition_id not in planted]
    if checked.usable and not honest:
        metrics = run.strategy.mean_metrics([r.message.content for r in checked.usable])
    elif (metrics := run.strategy.aggregate_replies(honest)) is None:
        stop(run.arm, server_round, checked.faults)
    return Trained(metrics, [r.partition_id for r in checked.usable], sorted(r.partition_id for r in honest),
                   checked.faults)


def train_secure(run: ArmRun, server_round: int, sent: ArrayRecord, messages: list[Message],
                 planted: dict[int, dict[str, torch.Tensor]]) -> Trained:
    """SecAgg+ collects the masked replies and unmasks their example-weighted mean -> audit (the mean) ->
    step on it. The server never holds a single reply; the clients' metrics travel in the clear."""
    settings, tuned = run.auditor.secure_aggregation(server_round, planted, len(messages))
    result = secure_round(run.grid, run.partitions.address(messages), settings, run.arm.clients.timeout,
                          run.strategy.node_partitions, list(run.strategy.expected), server_round)
    run.auditor.audit_aggregate(server_round, sent, result, planted, tuned)
    if result.aggregate is None:
        raise RunStopped(f"round {server_round}: {result.halted}")
    if len(result.contributors) < run.strategy.min_replies:
        stop(run.arm, server_round, result.faults)
    warnings = precision_warnings([(c.partition_id, dict(c.metrics)) for c in result.contributors])
    log(INFO, "round %d, secure aggregation: the mean of %d clients, within %.3g of their plain weighted mean",
        server_round, len(result.contributors), result.bound)
    for line in warnings:
        log(WARNING, "round %d, secure aggregation: %s", server_round, line)
    # A planted round's sum answers the planted weights: the adversary's alone, the global model waits.
    if not planted:
        run.strategy.optimizer.step([result.aggregate], [float(result.num_examples)])
    metrics = run.strategy.mean_metrics([RecordDict({METRICS: c.metrics}) for c in result.contributors])
    partitions = [c.partition_id for c in result.contributors]
    return Trained(metrics, partitions, [] if planted else partitions, result.faults, {"secure_aggregation": {
        "clients": len(partitions),
        "dropped": sorted({f.partition_id for f in result.faults}),
        "error_bound": result.bound,
        "warnings": warnings,
        "settings": settings.model_dump(exclude={"enabled"}),
        "settings_tuned_by_server": tuned,
    }})


def stop(arm: Arm, server_round: int, faults: list[Fault]) -> NoReturn:
    reasons = "; ".join(f"partition {f.partition_id}: {f.reason}" for f in faults) or "no replies"
    raise RunStopped(f"round {server_round}: fewer than clients.min_per_round "
                     f"({arm.clients.min_per_round}) usable replies ({reasons})")


def evaluate_federated(run: ArmRun, server_round: int, partitions: list[int]) -> Evaluation:
    """Top-1 and loss of the global model over the round's clients (each a shard of the held-out split,
    weighted by example count); the replies that failed go into the audit (the training faults were audited
    with the replies)."""
    messages = run.strategy.configure_evaluate(
        server_round, ArrayRecord(run.model.state_dict()), ConfigRecord({ARM: run.key}), partitions)
    replies = send_and_receive(run.grid, run.partitions.address(messages), timeout=run.arm.clients.timeout)
    checked = run.strategy.check_evaluation(messages, replies)
    append_fault_records(run.store, run.arm.name, server_round, checked.faults, phase="evaluate")
    metrics = run.strategy.aggregate_evaluation(checked.usable) or MetricRecord({})
    return Evaluation(float(metrics.get(ACCURACY, float("nan"))), float(metrics.get(LOSS, float("nan"))),
                      "clients", checked.faults)
