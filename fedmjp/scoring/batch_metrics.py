"""Leakage of a whole batch: which reconstruction is which image, and how many patches came out exactly.

An attack on a batch returns its images in an order of its own (gradients are sums over the batch), so
per-image metrics are only meaningful after matching reconstructions one-to-one to the client's images
(:func:`match_images`, Hungarian assignment on PSNR). Attacks that read patches rather than images (the
planting attacks) are scored by :func:`patch_recovery` on the pooled patches of the batch.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import maximum_bipartite_matching
from torch import Tensor

from .metrics import pairwise_psnr
from ..models.patches import flat_tiles

__all__ = ["EXACT_PATCH_DB", "align_batch", "match_images", "patch_recovery", "patches_in_image"]

# A patch at or above 40 dB is within about a quarter of an 8-bit step per pixel: the patch itself leaked.
EXACT_PATCH_DB = 40.0


def match_images(reconstruction: Tensor, truth: Tensor) -> Tensor:
    """One-to-one assignment (B,) of reconstructions to true images maximising the summed PSNR.

    Entry ``j`` is the index of the reconstruction matched to true image ``j``. Both are (B, C, H, W).
    """
    if reconstruction.shape != truth.shape or truth.ndim != 4:
        raise ValueError(f"reconstruction and truth must both be (B, C, H, W); got "
                         f"{tuple(reconstruction.shape)} and {tuple(truth.shape)}")
    value = pairwise_psnr(reconstruction.detach().float().clamp(0, 1).flatten(1).cpu(),
                          truth.detach().float().clamp(0, 1).flatten(1).cpu())
    rows, cols = linear_sum_assignment(value.numpy(), maximize=True)
    assignment = torch.empty(truth.shape[0], dtype=torch.long)
    assignment[torch.from_numpy(cols)] = torch.from_numpy(rows)
    return assignment


def align_batch(reconstruction: Tensor, truth: Tensor) -> Tensor:
    """The reconstructions reordered so that item ``j`` is the one matched to true image ``j``."""
    return reconstruction[match_images(reconstruction, truth).to(reconstruction.device)]


def patch_recovery(
    recovered: Tensor, positions: Tensor | None, truth: Tensor, patch: int, *, threshold_db: float = EXACT_PATCH_DB
) -> dict[str, float]:
    """Share of the batch's true patches recovered exactly, and exactly at their own position.

    ``recovered`` is either images (R, C, H, W) cut into tiles (their positions are then the tile
    indices, row-major), or patches (M, C*patch*patch) with ``positions`` (M,) giving each one's recovered
    position (-1 where unknown). Every true patch is matched at most once and every recovered patch at
    most once (maximum bipartite matching over the pairs at ``threshold_db`` or better), so duplicates
    never count twice.

    Returns ``patches_exact`` (matched pairs / true patches) and ``patches_placed`` (matched pairs whose
    recovered position is the true patch's own, matched among those pairs alone / true patches).
    """
    true_tiles = flat_tiles(truth.detach().float().clamp(0, 1), patch)  # (B, N, D)
    per_image = true_tiles.shape[1]
    true_flat = true_tiles.reshape(-1, true_tiles.shape[-1]).cpu()
    true_pos = torch.arange(true_flat.shape[0]) % per_image
    if recovered.ndim == 4:
        rec_tiles = flat_tiles(recovered.detach().float().clamp(0, 1), patch)
        rec_flat = rec_tiles.reshape(-1, rec_tiles.shape[-1]).cpu()
        rec_pos = torch.arange(rec_flat.shape[0]) % per_image
    else:
        if positions is None or positions.shape != recovered.shape[:1]:
            raise ValueError("recovered patches (M, D) need positions (M,)")
        rec_flat, rec_pos = recovered.detach().float().clamp(0, 1).cpu(), positions.long().cpu()
    if rec_flat.shape[-1] != true_flat.shape[-1]:
        raise ValueError(f"recovered patches have {rec_flat.shape[-1]} values, true ones {true_flat.shape[-1]}")
    exact = pairwise_psnr(true_flat, rec_flat) >= threshold_db  # (true, recovered)
    placed = exact & (true_pos[:, None] == rec_pos[None, :])
    total = true_flat.shape[0]
    return {"patches_exact": _matched_count(exact) / total, "patches_placed": _matched_count(placed) / total}


def patches_in_image(images: Tensor, truth: Tensor, patch: int, *,
                     threshold_db: float = EXACT_PATCH_DB) -> float | None:
    """Share of the exact patches in reconstructed ``images`` (B, C, H, W) that sit in their own image.

    Tiles are matched to the batch's true patches (each at most once, at ``threshold_db`` or better); the
    reconstructions' order is the attack's own, so each reconstruction is paired with the true image it holds
    most of the patches of (one-to-one, Hungarian on the counts). None when no tile is exact.
    """
    true_flat = flat_tiles(truth.detach().float().clamp(0, 1), patch).flatten(0, 1).cpu()
    rec_flat = flat_tiles(images.detach().float().clamp(0, 1), patch).flatten(0, 1).cpu()
    exact = pairwise_psnr(true_flat, rec_flat) >= threshold_db
    if not exact.any():
        return None
    match = _matching(exact)
    true_index = np.flatnonzero(match >= 0)
    per_image = true_flat.shape[0] // truth.shape[0]
    counts = np.zeros((truth.shape[0], images.shape[0]))
    np.add.at(counts, (true_index // per_image, match[true_index] // per_image), 1)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    return float(counts[rows, cols].sum() / counts.sum())


def _matched_count(pairs: Tensor) -> int:
    """Size of a maximum matching in the bipartite graph given by a boolean (true, recovered) matrix."""
    return int((_matching(pairs) >= 0).sum()) if pairs.any() else 0


def _matching(pairs: Tensor) -> np.ndarray:
    """A maximum matching of a boolean (true, recovered) matrix: for each true item, its recovered one or -1."""
    return maximum_bipartite_matching(csr_matrix(pairs.numpy().astype(np.int8)), perm_type="column")
