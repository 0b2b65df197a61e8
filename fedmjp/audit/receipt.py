"""Leakage receipts: a client scores a reconstruction against the batch it really used.

Ground truth never leaves the client: the server sends the reconstruction, the client
returns numbers. Attacks return a batch's images in an order of their own, so reconstructions
are matched to true images one-to-one (``batch_metrics.match_images``, Hungarian on PSNR) before
any per-image metric. A batch (B > 1) is also scored patch by patch (``patches_exact`` /
``patches_placed``; a patch-reading attack's assembled images also by ``patches_in_image``). Leakage is relative to one data-free baseline, the same for every attack:
a mid-grey image (``BASELINE_GREY``); the attack's own start is scored too (``start_psnr``).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from ..protocol import Scores
from ..scoring.batch_metrics import match_images, patch_recovery, patches_in_image
from ..scoring.metrics import leakage_metrics, pairwise_mse
from .sent import Sent

# The data-free baseline: what an attacker who saw no gradient would guess for every pixel.
BASELINE_GREY = 0.5


def align(reconstruction: torch.Tensor, truth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (rec, true) of the best one-to-one pairing (sizes may differ, e.g. a replay over
    several epochs reconstructs more examples than the client holds)."""
    if reconstruction.shape == truth.shape:
        return match_images(reconstruction, truth), torch.arange(len(truth))
    cost = pairwise_mse(reconstruction.detach().float().clamp(0, 1).flatten(1), truth.detach().float().flatten(1))
    rows, cols = linear_sum_assignment(cost.numpy())
    return torch.as_tensor(rows), torch.as_tensor(cols)


def _mask_rows(shuffled: torch.Tensor | None, true_idx: torch.Tensor) -> torch.Tensor | None:
    """The masks of the scored true images: one per-batch mask for all, or each image's own."""
    if shuffled is None:
        return None
    mask = shuffled.bool()
    return mask[0] if mask.shape[0] == 1 else mask[true_idx]


def score(
    reconstruction: torch.Tensor,
    truth: torch.Tensor,
    patch: int,
    shuffled: torch.Tensor | None = None,
    labels_true: torch.Tensor | None = None,
    labels_pred: torch.Tensor | None = None,
) -> dict[str, float]:
    """Leakage metrics of the matched pairs; ``shuffled`` is (1, N) or (B_true, N) in truth order."""
    rec_idx, true_idx = align(reconstruction, truth)
    matched, real = reconstruction[rec_idx].clamp(0, 1), truth[true_idx]
    metrics = leakage_metrics(matched, real, patch=patch, shuffled=_mask_rows(shuffled, true_idx),
                              labels_true=labels_true, labels_pred=labels_pred, lpips=True)
    if len(truth) > 1:
        metrics.update(patch_recovery(matched, None, real, patch))
    return metrics


def client_receipt(
    truth: torch.Tensor,
    labels_true: torch.Tensor,
    shuffled: torch.Tensor | None,
    patch: int,
    reconstructions: list[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]],
) -> list[Scores]:
    """(metrics, baseline metrics) for each (reconstruction, start, recovered labels).

    The baseline is the mid-grey image for every attack; ``metrics["start_psnr"]`` is the
    attack's own starting point (matched like the reconstruction).
    """
    grey = score(torch.full_like(truth, BASELINE_GREY), truth, patch, shuffled)
    receipts = []
    for images, start, labels in reconstructions:
        metrics = score(images, truth, patch, shuffled, labels_true, labels)
        if start is not None:
            rec_idx, true_idx = align(start, truth)
            metrics["start_psnr"] = leakage_metrics(start[rec_idx].clamp(0, 1), truth[true_idx], lpips=False)["psnr"]
        receipts.append((metrics, dict(grey)))
    return receipts


def patch_scores(truth: torch.Tensor, patch: int, patches: torch.Tensor, positions: torch.Tensor) -> dict[str, float]:
    """A patch-reading attack's (imprint) recovered patches, with their positions (-1: unknown), against the
    batch: ``patches_exact`` and ``patches_placed`` (:func:`fedmjp.scoring.batch_metrics.patch_recovery`)."""
    return patch_recovery(patches, positions, truth, patch)


def receipt_scores(truth: torch.Tensor, labels_true: torch.Tensor, shuffled: torch.Tensor | None, patch: int,
                   sent: list[Sent]) -> list[Scores]:
    """:func:`client_receipt`, and a patch-reading attack also scored on the patches it read, placed or not."""
    scored = client_receipt(truth, labels_true, shuffled, patch, [s[:3] for s in sent])
    for (metrics, _), (images, _, _, patches, positions) in zip(scored, sent):
        if patches is not None:
            metrics.update(patch_scores(truth, patch, patches, positions))
            in_image = patches_in_image(images, truth, patch)
            if in_image is not None:
                metrics["patches_in_image"] = in_image
    return scored


def round_examples(batches: list[np.ndarray], masks: list[torch.Tensor | None]
                   ) -> tuple[np.ndarray, torch.Tensor | None]:
    """What a round's reconstructions are scored against: the indices of every example the client used and,
    for a one-step round, its shuffle mask (a mask is only meaningful for one step)."""
    if len(batches) == 1:
        return batches[0], masks[0]  # batch order: per-sample masks follow it
    return np.unique(np.concatenate(batches)), None
