"""The federated rounds of a scenario in this process, without Flower or Ray.

For a machine that has torch and timm but not Flower: the same arithmetic as the ServerApp's round
(seeded sampling of partitions, ``client_round`` on each, pruning as the client's mod does, the
example-weighted server optimiser step, evaluation on the server's copy of the test split), written
to a run directory of the same layout, so ``fedmjp results`` and ``fedmjp audit`` read it. A curious
server's attacks run as in the ServerApp's audit (the adversary on the reply as the server receives it);
the receipt is scored here by the client's own scoring, against the batches it used. What needs Flower or
a client in another process is refused: a planting server, Flower's local DP, the guard, faults, SecAgg+.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..federation.aggregate import ServerOptimizer
from ..audit import AuditStore
from ..audit.adversary import Adversary
from ..audit.receipt import receipt_scores, round_examples
from ..audit.sent import sent_of
from ..audit.records import Receipt, append_attack_records
from ..defences.reply import prune
from ..errors import InputError
from ..federation.rundir import append_jsonl, arm_dir, atomic_torch_save, atomic_write, prepare_run_dir
from ..scenario import Arm, Scenario
from ..federation.train import reply_kind, resolve_device
from ..federation.workload import ClientRound, build_model, client_round, dataset, evaluate_global, stack

Progress = Callable[[str, int, int], None]


def check_in_process(arm: Arm) -> None:
    """Refuse, naming the field, what only a Flower run does."""
    for field, used in (("audit.server.kind", arm.audit.server.kind != "honest"),
                        ("defence.dp", arm.defence.dp is not None),
                        ("guard.enabled", arm.guard.enabled), ("faults.fraction", arm.faults.fraction > 0),
                        ("training.secure_aggregation.enabled", arm.training.secure_aggregation.enabled)):
        if used:
            raise InputError(f"arms.{arm.name}.{field}: not available in-process (it needs a Flower run)")


def run_arm(arm: Arm, run_dir: Path, progress: Progress = lambda *_: None) -> list[dict[str, Any]]:
    """All rounds of one arm; returns (and appends to ``arms/NAME/metrics.jsonl``) one row per round."""
    check_in_process(arm)
    out = arm_dir(run_dir, arm.name)
    out.mkdir(parents=True, exist_ok=True)
    model = build_model(arm).to(resolve_device(arm.device))
    t = arm.training
    server = ServerOptimizer(model, reply_kind(t.mode), t.server_optimizer, t.server_lr)
    # As the strategy samples: its own seeded generator over the sorted partition ids.
    sampler = random.Random(arm.seed)
    adversary = Adversary(arm) if arm.audit.attacks else None
    rows = []
    for server_round in range(1, t.rounds + 1):
        started = time.perf_counter()
        weights = {name: value.detach().cpu().clone() for name, value in model.state_dict().items()}
        chosen = sorted(sampler.sample(list(range(arm.clients.num_clients)), arm.clients.sampled_per_round))
        works = [client_round(arm, weights, pid, server_round) for pid in chosen]
        results = [w.result for w in works]
        tensors = [prune(r.tensors, arm.defence.prune) if arm.defence.prune else r.tensors for r in results]
        if adversary is not None and arm.audit.attacks_round(server_round):
            patch = model.patch_embed.patch_size[0]
            audit_round(adversary, AuditStore(run_dir), patch, server_round, weights,
                        {pid: (work, sent) for pid, work, sent in zip(chosen, works, tensors)})
        examples = [float(r.num_examples) for r in results]
        server.step(tensors, examples)
        test = evaluate_global(arm, model)
        row = {"round": server_round, "accuracy": test["accuracy"], "loss": test["loss"], "evaluated_on": "server",
               "train_loss": sum(r.loss * n for r, n in zip(results, examples)) / sum(examples),
               "clients": len(chosen), "faults": [], "seconds": time.perf_counter() - started}
        append_jsonl(out / "metrics.jsonl", row)
        rows.append(row)
        progress(arm.name, server_round, t.rounds)
    atomic_torch_save(out / "final_weights.pt", {k: v.cpu() for k, v in model.state_dict().items()})
    return rows


def audit_round(adversary: Adversary, store: AuditStore, patch: int, server_round: int,
                weights: dict[str, torch.Tensor], replies: dict[int, tuple[ClientRound, dict[str, torch.Tensor]]]
                ) -> None:
    """The curious server attacks the targeted replies ({partition: (client's round, tensors the server got)})
    and appends their records; each receipt is the client's scoring of its own batches."""
    arm = adversary.arm
    for partition_id in arm.audit.targets(sorted(replies)):
        work, tensors = replies[partition_id]
        result = work.result
        metrics = result.settings.to_metrics() if result.settings else None
        outcomes = adversary.run(adversary.observation(weights, tensors, result.num_examples, server_round, metrics))
        attacked = [o for o in outcomes if o.status == "attacked"]
        receipt = None
        if attacked:
            masks = [j.mask.cpu() if j is not None else None for j in result.jigsaws]
            indices, shuffled = round_examples(work.batches, masks)
            truth, labels = stack(dataset(arm, "train"), indices)
            scored = receipt_scores(truth, labels, shuffled, patch, [sent_of(o.reconstruction) for o in attacked])
            receipt = Receipt(dict(enumerate(scored)), truth if arm.audit.store_ground_truth else None,
                              result.shuffled_steps)
        append_attack_records(store, arm.name, server_round, partition_id, result.num_examples, outcomes, receipt)


def simulate_in_process(scenario: Scenario, out: Path, progress: Progress = lambda *_: None) -> dict[str, Any]:
    """Every arm in this process into a new run directory; the last round of each, as ``simulate`` returns."""
    import yaml

    for arm in scenario.arms.values():
        check_in_process(arm)
    run_dir = prepare_run_dir(scenario, out).resolve()
    summary = {name: run_arm(arm, run_dir, progress)[-1] for name, arm in scenario.arms.items()}
    atomic_write(run_dir / "summary.yaml", yaml.safe_dump(summary, sort_keys=True).encode())
    return summary
