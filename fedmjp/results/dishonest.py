"""The dishonest server's part of the results: imprint against each arm, at several batch sizes.

Library-level, in this process: for each arm of the privacy part, batch size and trial, the server plants imprint bins in the
arm's round-1 global weights (thresholds from its own images, ``audit.server.images``, never a client's), a
client computes one FedSGD gradient of a seeded batch of the arm's test split on them (with the arm's jigsaw
and pruning), the server decodes the reply and the client's receipt scores it. The client's model check
(:mod:`fedmjp.defences.model_check`) is run on every planted model against the global one: its detection rate.
Flower's local DP exists only inside a Flower run, so a DP arm is listed as not measured here.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from ..audit.attack_case import ClientModel, run_single
from ..attacks import NotApplicable
from ..attacks.imprint import Imprint, server_images
from ..defences.reply import prune
from ..defences.model_check import check_weights
from ..federation.rundir import atomic_json
from ..scenario import Arm, Scenario
from ..federation.workload import build_model, dataset, derive_seed, input_size, stack
from .provenance import read_json
from ..scoring.reading import not_reduced
from .settings import REFERENCE

BATCHES = {"quick": (1, 8), "full": (1, 8, 32)}
TRIALS = {"quick": 2, "full": 3}
ROWS = "rows.json"
# Shares of the batch's patches within this of the ViT's are "as many": a few patches of a 2-3 batch mean
# are the trials' noise, not a defence.
SHARE_MARGIN = 0.05
AS_MANY = "does not help: as many patches read as from the ViT"
FEWER = "fewer patches read than from the ViT"
Progress = Callable[[str, int, int], None]  # (arm, cells done, cells)


def run_dishonest(scenario: Scenario, run_dir: Path, setting: str, progress: Progress = lambda *_: None) -> Path:
    """Measure every cell of the part and write ``run_dir/rows.json``; return its path."""
    batches, trials = BATCHES[setting], TRIALS[setting]
    rows = []
    for arm in scenario.arms.values():
        # The server's own images and the client's test split, read once per arm, not per cell.
        spec = arm.audit.server.images
        own = server_images(input_size(arm), spec.count, source=spec.source, root=spec.root, seed=arm.seed)
        test = dataset(arm, "test")
        for done, batch in enumerate(batches):
            progress(arm.name, done, len(batches))
            rows.append(measure_cell(arm, batch, trials, own, test))
        progress(arm.name, len(batches), len(batches))
    run_dir.mkdir(parents=True, exist_ok=True)
    target = run_dir / ROWS
    atomic_json(target, {"setting": setting, "trials": trials, "batches": list(batches), "rows": rows})
    return target


def read_dishonest(out: Path) -> dict[str, Any]:
    """The part's rows as written (empty when the part did not run)."""
    return read_json(out / "runs" / "dishonest" / ROWS)


def measure_cell(arm: Arm, batch: int, trials: int, own: Tensor, test: Any) -> dict[str, Any]:
    """Means over ``trials`` seeded batches: patches read, placed, in their own image, matched PSNR and SSIM,
    attack seconds; how many
    planted models the client check flagged. ``own``: the server's images; ``test``: the arm's test split.
    A cell the attack cannot serve says why instead."""
    row: dict[str, Any] = {"arm": arm.name, "batch": batch, "trials": trials}
    if arm.defence.dp is not None:
        return row | {"not_applicable": "Flower's local DP runs only inside a Flower run: not measured here"}
    defend = partial(prune, fraction=arm.defence.prune) if arm.defence.prune else None
    scores: list[dict[str, float]] = []
    detected = 0
    for trial in range(trials):
        seed = derive_seed(arm.seed, "dishonest", batch, trial)
        model = build_model(arm)
        sent = {name: value.detach().clone() for name, value in model.state_dict().items()}
        client = ClientModel(arm.model.name, model, arm.model.create_kwargs())
        images, labels = stack(test, np.random.default_rng(seed).choice(len(test), batch, replace=False))
        try:
            result = run_single(client, images, Imprint(seed), labels, seed=seed, server_own=own,
                                defend=defend)
        except NotApplicable as exc:
            return row | {"not_applicable": str(exc).removeprefix("imprint: ")}
        # run_single left the planted weights in the client's model: what the client's check would see.
        detected += bool(check_weights(model.state_dict(), sent))
        scores.append({key: result.metrics[key] for key in ("patches_exact", "patches_placed", "psnr", "ssim")}
                      | {"patches_in_image": result.metrics.get("patches_in_image"), "seconds": result.seconds})
    # patches_in_image is None for a batch with no exact patch: the mean is over the trials that have one.
    means = {key: _mean([s[key] for s in scores if s[key] is not None]) for key in scores[0]}
    return row | means | {"detected": detected}


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def imprint_reading(row: dict[str, Any], reference: dict[str, Any] | None) -> str:
    """The words of a row, generated from its numbers and the ViT's at the same batch size."""
    if row.get("not_applicable"):
        return f"not applicable: {row['not_applicable']}"
    if row["arm"] == REFERENCE:
        return "reference"
    if reference is None or reference.get("not_applicable"):
        return "–"
    if row["patches_exact"] < reference["patches_exact"] - SHARE_MARGIN:
        said = f"{FEWER} ({row['patches_exact']:.2f} vs {reference['patches_exact']:.2f})"
    elif row["patches_placed"] < reference["patches_placed"] - SHARE_MARGIN:
        said = (f"{AS_MANY}; fewer placed ({row['patches_placed']:.2f} vs {reference['patches_placed']:.2f}): "
                "positions hidden, contents not")
    else:
        said = AS_MANY
    if not not_reduced(row["psnr"], reference["psnr"]):
        said += f"; images less exact ({row['psnr']:.1f} vs {reference['psnr']:.1f} dB)"
    return said


def imprint_readings(rows: list[dict[str, Any]]) -> list[str]:
    """:func:`imprint_reading` of every row against the ViT's row at its batch size."""
    reference = {row["batch"]: row for row in rows if row["arm"] == REFERENCE}
    return [imprint_reading(row, reference.get(row["batch"])) for row in rows]
