"""Leakage receipts: a client scores a reconstruction against the batch it really used.

Ground truth never leaves the client: the server sends the reconstruction, the client
returns numbers. Attacks may return images in any order, so reconstructions are matched to
true images one-to-one (minimum MSE) before scoring, as gradient-inversion papers do.
"""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment

from ..metrics import leakage_metrics


def align(reconstruction: torch.Tensor, truth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (rec, true) of the best one-to-one pairing by MSE (sizes may differ)."""
    cost = torch.cdist(reconstruction.flatten(1).double(), truth.flatten(1).double()).pow(2)
    rows, cols = linear_sum_assignment(cost.numpy())
    return torch.as_tensor(rows), torch.as_tensor(cols)


def score(
    reconstruction: torch.Tensor,
    truth: torch.Tensor,
    patch: int,
    shuffled: torch.Tensor | None = None,
    labels_true: torch.Tensor | None = None,
    labels_pred: torch.Tensor | None = None,
) -> dict[str, float]:
    """Leakage metrics of the aligned pairs; ``shuffled`` is (1, N) or (B_true, N)."""
    rec_idx, true_idx = align(reconstruction, truth)
    mask = None
    if shuffled is not None:
        mask = shuffled.bool() if shuffled.shape[0] == 1 else shuffled.bool()[true_idx]
        mask = mask.expand(len(true_idx), -1) if mask.shape[0] == 1 else mask
    return leakage_metrics(
        reconstruction[rec_idx].clamp(0, 1),
        truth[true_idx],
        patch=patch,
        shuffled=mask,
        labels_true=labels_true,
        labels_pred=labels_pred,
        lpips=True,
    )


def client_receipt(
    truth: torch.Tensor,
    labels_true: torch.Tensor,
    shuffled: torch.Tensor | None,
    patch: int,
    reconstructions: list[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]],
) -> list[tuple[dict[str, float], dict[str, float]]]:
    """(metrics, baseline metrics) for each (reconstruction, start, recovered labels)."""
    receipts = []
    for images, start, labels in reconstructions:
        metrics = score(images, truth, patch, shuffled, labels_true, labels)
        baseline = score(start[: len(truth)], truth, patch, shuffled) if start is not None else {}
        receipts.append((metrics, baseline))
    return receipts


# The receipt travels as one flat MetricRecord: "{i}.m.{key}" for reconstruction i's metrics and
# "{i}.b.{key}" for its attack-start baseline. Encoded and decoded only here.
_PARTS = (("m", 0), ("b", 1))


def encode_scores(scored: list[tuple[dict[str, float], dict[str, float]]]) -> dict[str, float]:
    """Flatten [(metrics, baseline), ...] into the receipt's metric keys."""
    return {f"{i}.{part}.{key}": value
            for i, pair in enumerate(scored) for part, slot in _PARTS for key, value in pair[slot].items()}


def decode_scores(metrics: dict[str, float], count: int) -> dict[int, tuple[dict[str, float], dict[str, float]]]:
    """Inverse of :func:`encode_scores` for ``count`` reconstructions."""
    scored: dict[int, tuple[dict[str, float], dict[str, float]]] = {i: ({}, {}) for i in range(count)}
    for name, value in metrics.items():
        index, part, key = name.split(".", 2)
        scored[int(index)][dict(_PARTS)[part]][key] = float(value)
    return scored
