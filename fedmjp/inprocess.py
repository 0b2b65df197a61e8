"""The federated rounds of a scenario in this process, without Flower or Ray.

For a machine that has torch and timm but not Flower: the same arithmetic as the ServerApp's round
(seeded sampling of partitions, ``client_round`` on each, pruning as the client's mod does, the
example-weighted server optimiser step, evaluation on the server's copy of the test split), written
to a run directory of the same layout, so ``fedmjp results`` and ``fedmjp audit`` read it. What needs
Flower or a client in another process is refused: attacks, Flower's local DP, the guard, faults.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .aggregate import ServerOptimizer
from .defences import prune
from .errors import InputError
from .rundir import append_jsonl, arm_dir, atomic_torch_save, atomic_write
from .scenario import Arm, Scenario
from .train import reply_kind, resolve_device
from .workload import build_model, client_round, evaluate_global

Progress = Callable[[str, int, int], None]


def check_in_process(arm: Arm) -> None:
    """Refuse, naming the field, what only a Flower run does."""
    for field, used in (("audit.attacks", bool(arm.audit.attacks)), ("defence.dp", arm.defence.dp is not None),
                        ("guard.enabled", arm.guard.enabled), ("faults.fraction", arm.faults.fraction > 0)):
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
    rows = []
    for server_round in range(1, t.rounds + 1):
        started = time.perf_counter()
        weights = {name: value.detach().cpu().clone() for name, value in model.state_dict().items()}
        chosen = sorted(sampler.sample(list(range(arm.clients.num_clients)), arm.clients.sampled_per_round))
        results = [client_round(arm, weights, pid, server_round).result for pid in chosen]
        tensors = [prune(r.tensors, arm.defence.prune) if arm.defence.prune else r.tensors for r in results]
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


def simulate_in_process(scenario: Scenario, out: Path, progress: Progress = lambda *_: None) -> dict[str, Any]:
    """Every arm in this process into a new run directory; the last round of each, as ``simulate`` returns."""
    import yaml

    from .simulate import prepare_run_dir

    for arm in scenario.arms.values():
        check_in_process(arm)
    run_dir = prepare_run_dir(scenario, out).resolve()
    summary = {name: run_arm(arm, run_dir, progress)[-1] for name, arm in scenario.arms.items()}
    atomic_write(run_dir / "summary.yaml", yaml.safe_dump(summary, sort_keys=True).encode())
    return summary
