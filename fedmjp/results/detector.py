"""The client's model check measured as a detector: planting constructions it must refuse, honest models it must
not.

Library-level, in this process, on the privacy part's ViT and MJP 0.25 arms (their model and test split):

- plantings: for each construction (our imprint bins; imprint planted past the original check and past the
  current one by a server that knows them, :mod:`fedmjp.attacks.imprint_evasion`; trap weights after Boenisch
  et al., built independently of ours) and trial, the server plants in the arm's global weights from its own
  images, a client computes one FedSGD gradient of a seeded batch of its test split and the server decodes
  it. The check runs as a client would before training: the original weight-shape tests and the current check
  in a first round (no accepted weights), and the current check with history (the honest global weights
  accepted the round before). Patches read are what the server got had the client trained anyway.
- honest models: random init over seeds for every distinct model of the privacy part's arms; every round's
  global weights of an in-process FedAvg run with Adam at a high learning rate (2 clients, a few local steps
  a round) for the ViT and MJP 0.25, checked in a first round and against the round before; the accuracy
  part's final weights when that part ran. Each is checked on a seeded batch of its arm's test split.
"""

from __future__ import annotations

import glob
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..audit.attack_case import ClientModel, run_single
from ..attacks import NotApplicable, build_attack
from ..attacks.imprint import server_images
from ..defences.model_check import Finding, check_model, check_original, range_bound
from ..federation.rundir import atomic_json
from ..scenario import Arm, Scenario
from ..federation.train import local_update
from ..federation.workload import build_model, dataset, derive_seed, evaluate_global, input_size, stack
from .provenance import read_json
from .settings import REFERENCE

ARMS = (REFERENCE, "mjp-0.25")
# name -> (planting attack, its options)
CONSTRUCTIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "imprint": ("imprint", {}),
    "imprint, knows the original check": ("imprint", {"knows_check": "original"}),
    "imprint, knows the current check": ("imprint", {"knows_check": "current"}),
    "trap weights": ("trap", {}),
}
# The client's batch in a planted round (what the check looks at, what the server reads), per setting.
BATCHES = {"quick": (1,), "full": (1, 8)}
BATCH = 8  # the batch each honest model is checked on
TRIALS = {"quick": 1, "full": 2}
SEEDS = {"quick": 3, "full": 20}  # random inits per distinct model
ROUNDS = {"quick": 3, "full": 30}  # rounds of the high-lr Adam FedAvg run, per arm
ADAM_LR = 3e-3  # high for a ViT trained with Adam (1e-3 is the usual ceiling)
ADAM_SOURCE = "FedAvg, Adam lr 3e-3"
LOCAL_STEPS = 5
LOCAL_BATCH = 16
ROWS = "rows.json"
Progress = Callable[[str, int, int], None]  # (what, done, total)


@dataclass
class Honest:
    """One honest model to check: where it came from, its arm, its weights and those accepted before it."""

    source: str
    arm: Arm
    weights: dict[str, Tensor]
    accepted: dict[str, Tensor] | None = None
    # Test top-1 of these weights where it shows whether a run learns (its first and last rounds).
    accuracy: float | None = None


def run_detector(scenario: Scenario, run_dir: Path, setting: str, accuracy_dir: Path | None = None,
                 progress: Progress = lambda *_: None) -> Path:
    """Measure the plantings and the honest models; write ``run_dir/rows.json`` and return its path."""
    arms = [scenario.arms[name] for name in ARMS if name in scenario.arms]
    cells = [(arm, name, batch) for arm in arms for name in CONSTRUCTIONS for batch in BATCHES[setting]]
    plantings = []
    own = {arm.name: server_images(input_size(arm), arm.audit.server.images.count,
                                   source=arm.audit.server.images.source, root=arm.audit.server.images.root,
                                   seed=arm.seed) for arm in arms}  # read once per arm, not per cell
    for done, (arm, name, batch) in enumerate(cells):
        progress("plantings", done, len(cells))
        plantings.append(measure_planting(arm, name, batch, TRIALS[setting], own[arm.name]))
    progress("plantings", len(cells), len(cells))
    models = list(distinct_models(scenario))
    trained = trained_weights(accuracy_dir) if accuracy_dir is not None else []
    total = len(models) * SEEDS[setting] + sum(name in scenario.arms for name in ARMS) * ROUNDS[setting] + len(trained)
    honest = measure_honest(honest_models(scenario, setting, trained), lambda done: progress("honest models", done,
                                                                                               total))
    run_dir.mkdir(parents=True, exist_ok=True)
    target = run_dir / ROWS
    atomic_json(target, {"setting": setting, "batches": list(BATCHES[setting]), "honest_batch": BATCH,
                         "trials": TRIALS[setting], "plantings": plantings, "honest": honest})
    return target


def read_detector(out: Path) -> dict[str, Any]:
    """The part's rows as written (empty when the part did not run)."""
    return read_json(out / "runs" / "detector" / ROWS)


def client_batch(arm: Arm, seed: int, size: int = BATCH) -> tuple[Tensor, Tensor]:
    """A seeded batch of ``size`` images of the arm's test split (the client's own)."""
    test = dataset(arm, "test")
    return stack(test, np.random.default_rng(seed).choice(len(test), size, replace=False))


def measure_planting(arm: Arm, construction: str, batch: int, trials: int, own: Tensor) -> dict[str, Any]:
    """Refusals (original check and current check in a first round, current check with history) and patches
    read, over ``trials`` seeded batches. ``own``: the server's images (``audit.server.images``)."""
    attack_name, options = CONSTRUCTIONS[construction]
    row: dict[str, Any] = {"construction": construction, "arm": arm.name, "batch": batch, "trials": trials}
    checker = build_model(arm)  # the client's architecture, which the check loads each model into
    counts: Counter[str] = Counter()
    fired: Counter[str] = Counter()
    read, read_when_passed = [], []
    for trial in range(trials):
        seed = derive_seed(arm.seed, "detector", construction, batch, trial)
        model = build_model(arm)
        honest = {k: v.detach().clone() for k, v in model.state_dict().items()}
        images, labels = client_batch(arm, seed, batch)
        client = ClientModel(arm.model.name, model, arm.model.create_kwargs())
        try:
            result = run_single(client, images, build_attack(attack_name, seed=seed, **options), labels, seed=seed,
                                server_own=own)
        except NotApplicable as exc:
            return row | {"not_applicable": str(exc)}
        planted = {k: v.detach().clone() for k, v in model.state_dict().items()}  # what run_single planted
        first = check_model(checker, planted, None, images)
        counts["original"] += bool(check_original(planted))
        counts["first"] += bool(first)
        counts["history"] += bool(check_model(checker, planted, honest, images))
        fired.update({f.test for f in first})
        read.append(result.metrics["patches_exact"])
        if not first:
            read_when_passed.append(result.metrics["patches_exact"])
    return row | {"refused_original": counts["original"], "refused_first": counts["first"],
                  "refused_history": counts["history"], "fired": dict(fired),
                  "patches_exact": float(np.mean(read)),
                  "patches_when_passed": float(np.mean(read_when_passed)) if read_when_passed else None}


def distinct_models(scenario: Scenario) -> Iterator[Arm]:
    """One arm per distinct model of the scenario (arms that differ only in defences share a model)."""
    distinct: dict[str, Arm] = {}
    for arm in scenario.arms.values():
        distinct.setdefault(arm.model.model_dump_json(), arm)
    return iter(distinct.values())


def honest_models(scenario: Scenario, setting: str, trained: list[tuple[Arm, Path]]) -> Iterator[Honest]:
    """Every honest model of the part (see the module's docstring), one at a time."""
    for arm in distinct_models(scenario):
        for seed in range(SEEDS[setting]):
            seeded = arm.model_copy(update={"seed": seed})
            yield Honest("random init", seeded, dict(build_model(seeded).state_dict()))
    for name in ARMS:
        if name in scenario.arms:
            yield from adam_rounds(scenario.arms[name], ROUNDS[setting])
    for arm, path in trained:
        yield Honest("accuracy part, trained", arm, torch.load(path, map_location="cpu", weights_only=True))


def adam_rounds(arm: Arm, rounds: int) -> Iterator[Honest]:
    """Every round's global weights of a 2-client FedAvg run with Adam at ``ADAM_LR`` (each checked against
    the round before, as a client that took part then would)."""
    model = build_model(arm)
    train = dataset(arm, "train")
    rng = np.random.default_rng(derive_seed(arm.seed, "detector-adam"))
    previous = None
    for index in range(rounds):
        current = {k: v.detach().clone() for k, v in model.state_dict().items()}
        learned = evaluate_global(arm, model)["accuracy"] if index in (0, rounds - 1) else None
        yield Honest(ADAM_SOURCE, arm, current, previous, learned)
        updates = []
        for _client in range(2):
            model.load_state_dict(current)
            batches = [stack(train, rng.choice(len(train), LOCAL_BATCH, replace=False)) for _ in range(LOCAL_STEPS)]
            updates.append(local_update(model, batches, lr=ADAM_LR, optimizer="adam").tensors)
        model.load_state_dict({k: v + torch.stack([u[k] for u in updates]).mean(0) if k in updates[0] else v
                               for k, v in current.items()})
        previous = current


def trained_weights(accuracy_dir: Path) -> list[tuple[Arm, Path]]:
    """The accuracy part's final weights, every arm and seed, with the arm as that part resolved it."""
    from ..scenario import load_scenario

    found = []
    for path in sorted(Path(p) for p in glob.glob(str(accuracy_dir / "**" / "final_weights.pt"), recursive=True)):
        scenario_file = path.parents[2] / "scenario.yaml"  # RUN/arms/ARM/final_weights.pt
        arm = load_scenario(scenario_file).arms.get(path.parent.name) if scenario_file.is_file() else None
        if arm is not None:
            found.append((arm, path))
    return found


def measure_honest(models: Iterator[Honest], progress: Callable[[int], None]) -> dict[str, Any]:
    """False alarms of the current check (first round; with history where a model has one) per source, the
    tests that fired, and the largest |entry| per tensor kind seen (what the check's ranges must exceed)."""
    by_source: dict[str, dict[str, int]] = {}
    fired: Counter[str] = Counter()
    largest: dict[str, float] = {}
    for done, honest in enumerate(models):
        progress(done)
        model = build_model(honest.arm)
        images, _ = client_batch(honest.arm, derive_seed(honest.arm.seed, "detector-honest", done))
        first = check_model(model, honest.weights, None, images)
        later = check_model(model, honest.weights, honest.accepted, images) if honest.accepted is not None else []
        entry = by_source.setdefault(honest.source, {"models": 0, "false_alarms": 0, "with_history": 0,
                                                     "false_alarms_history": 0})
        entry["models"] += 1
        entry["false_alarms"] += bool(first)
        entry["with_history"] += honest.accepted is not None
        entry["false_alarms_history"] += bool(later)
        if honest.accuracy is not None:  # a run's first and last rounds: did it learn?
            entry.setdefault("top1", []).append(honest.accuracy)
        fired.update(_names(first + later))
        for name, value in honest.weights.items():
            kind = _kind(name)
            if range_bound(name) is not None and value.numel():
                largest[kind] = max(largest.get(kind, 0.0), float(value.abs().max()))
    totals = {key: sum(entry[key] for entry in by_source.values())
              for key in ("models", "false_alarms", "with_history", "false_alarms_history")}
    return totals | {"by_source": by_source, "fired": dict(fired), "largest": dict(sorted(largest.items()))}


def _kind(name: str) -> str:
    """A tensor's kind: its name with block numbers dropped."""
    return re.sub(r"blocks\.\d+\.", "blocks.N.", name)


def _names(findings: list[Finding]) -> set[str]:
    return {f"{f.test} on {f.tensor}" for f in findings}
