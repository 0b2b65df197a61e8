"""Leakage metrics: how much of a client's batch a gradient-inversion reconstruction recovers.

Images are float tensors (B, C, H, W) in [0, 1]; higher PSNR/SSIM (lower MSE, FFT2D, LPIPS) means more
leakage. Beyond the usual per-image scores there are two MJP-specific views:

* patch-matched PSNR: tiles of the reconstruction are matched one-to-one to the true tiles (Hungarian
  assignment on tile MSE), so content that leaked at the wrong position still counts;
* the split by ``shuffled`` positions (the patches MJP permuted): every position-wise score and the
  patch-matched PSNR are also reported over shuffled and unshuffled patches separately.

PSNR convention: PSNR is capped at ``PSNR_CAP`` dB (an exact match, MSE 0, scores the cap), so that batch
means stay finite and "perfect" has one value everywhere.
"""

from __future__ import annotations

import functools
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, overload

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from ..models.patches import flat_tiles

__all__ = [
    "LPIPS_MIN_SIZE",
    "PSNR_CAP",
    "fft2d_distance",
    "label_accuracy",
    "leakage_metrics",
    "lpips_available",
    "lpips_status",
    "match_patches",
    "pairwise_psnr",
    "patch_matched_psnr",
    "per_image_metrics",
    "psnr",
    "ssim",
]

# 100 dB is MSE 1e-10: far below 8-bit quantisation noise (~59 dB), so anything above it is an exact copy.
PSNR_CAP = 100.0
# AlexNet's strided stem and pooling need at least this many pixels per side.
LPIPS_MIN_SIZE = 32

Labels = Sequence[int] | Tensor | np.ndarray


# --------------------------------------------------------------------------- per-image building blocks


def psnr(x: Tensor, y: Tensor) -> Tensor:
    """PSNR per item (data range 1, dB, capped at ``PSNR_CAP``) over all dims but the first: (B, ...) -> (B,)."""
    dims = tuple(range(1, x.ndim))
    value = peak_signal_noise_ratio(x, y, data_range=1.0, reduction="none", dim=dims)
    return value.clamp(max=PSNR_CAP)


def pairwise_psnr(a: Tensor, b: Tensor) -> Tensor:
    """(M, D) x (N, D) -> (M, N) :func:`psnr` of every pair, in float64 (ties between exact copies stay exact).

    One row at a time: broadcasting all pairs at once holds M*N*D values.
    """
    b = b.double()
    return torch.stack([psnr(row.expand_as(b), b) for row in a.double()])


def ssim(x: Tensor, y: Tensor) -> Tensor:
    """SSIM per image (11x11 Gaussian window, sigma 1.5, data range 1): (B,)."""
    return _ssim_with_map(x, y)[0]


def _ssim_with_map(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """SSIM per image and its (B, C, H, W) map (the per-image value is the map's mean)."""
    return structural_similarity_index_measure(
        x, y, gaussian_kernel=True, kernel_size=11, sigma=1.5, data_range=1.0, reduction="none",
        return_full_image=True,
    )


def fft2d_distance(x: Tensor, y: Tensor) -> Tensor:
    """1 - cosine similarity of the 2-D Fourier magnitude spectra, per channel, averaged over channels: (B,)."""
    spec_x = torch.fft.fft2(x).abs().flatten(2)
    spec_y = torch.fft.fft2(y).abs().flatten(2)
    # Rounding can push the cosine of identical spectra a hair above 1.
    return (1 - F.cosine_similarity(spec_x, spec_y, dim=-1)).clamp(min=0).mean(dim=1)


def _mse(x: Tensor, y: Tensor) -> Tensor:
    return (x - y).pow(2).flatten(1).mean(dim=1)


def pairwise_mse(a: Tensor, b: Tensor) -> Tensor:
    """(..., M, D) x (..., N, D) -> (..., M, N) mean squared error in float64."""
    # Direct (not matmul-based) distances so exact copies cost exactly 0; float64 keeps ties clean.
    dist = torch.cdist(a.double(), b.double(), compute_mode="donot_use_mm_for_euclid_dist")
    return dist.pow(2) / a.shape[-1]


def _prepare(reconstruction: Tensor, truth: Tensor, patch: int | None = None) -> tuple[Tensor, Tensor]:
    if reconstruction.shape != truth.shape or reconstruction.ndim != 4:
        raise ValueError(
            f"reconstruction and truth must both be (B, C, H, W); got {tuple(reconstruction.shape)} "
            f"and {tuple(truth.shape)}"
        )
    if patch is not None and (patch <= 0 or truth.shape[-2] % patch or truth.shape[-1] % patch):
        raise ValueError(f"patch {patch} must divide the image size {tuple(truth.shape[-2:])}")
    # Data range 1 is assumed throughout, and attack outputs may overshoot it.
    x = reconstruction.detach().float().clamp(0, 1)
    y = truth.detach().float().to(x.device).clamp(0, 1)
    return x, y


# --------------------------------------------------------------------------- patch matching


def _match(rec_tiles: Tensor, true_tiles: Tensor) -> Tensor:
    """Optimal one-to-one assignment (B, N): entry [b, j] is the reconstructed tile matched to true tile j."""
    cost = pairwise_mse(rec_tiles, true_tiles)
    assignment = torch.empty(true_tiles.shape[:2], dtype=torch.long)
    for b, matrix in enumerate(cost.cpu().numpy()):
        rows, cols = linear_sum_assignment(matrix)
        assignment[b, torch.from_numpy(cols)] = torch.from_numpy(rows)
    return assignment.to(rec_tiles.device)


def _matched_tiles(x: Tensor, y: Tensor, patch: int) -> tuple[Tensor, Tensor, Tensor]:
    """Reconstructed tiles reordered onto their matched true positions, the true tiles, and the assignment."""
    rec, true = flat_tiles(x, patch), flat_tiles(y, patch)
    assignment = _match(rec, true)
    matched = torch.gather(rec, 1, assignment.unsqueeze(-1).expand_as(rec))
    return matched, true, assignment


def match_patches(reconstruction: Tensor, truth: Tensor, patch: int) -> Tensor:
    """Optimal one-to-one tile assignment (B, N), N = (H/patch)*(W/patch) in row-major order.

    Entry [b, j] is the index of the reconstructed tile matched to true tile j (minimum total tile MSE).
    """
    x, y = _prepare(reconstruction, truth, patch)
    return _matched_tiles(x, y, patch)[2]


@overload
def patch_matched_psnr(
    reconstruction: Tensor, truth: Tensor, patch: int, *, return_assignment: Literal[False] = ...
) -> Tensor: ...
@overload
def patch_matched_psnr(
    reconstruction: Tensor, truth: Tensor, patch: int, *, return_assignment: Literal[True]
) -> tuple[Tensor, Tensor]: ...
def patch_matched_psnr(
    reconstruction: Tensor, truth: Tensor, patch: int, *, return_assignment: bool = False
) -> Tensor | tuple[Tensor, Tensor]:
    """PSNR (B,) after optimally matching reconstructed tiles to true tiles of the same image.

    A reconstruction equal to the truth with its patches permuted scores ``PSNR_CAP``, like the exact truth.
    With ``return_assignment`` also returns the (B, N) assignment of :func:`match_patches`.
    """
    x, y = _prepare(reconstruction, truth, patch)
    matched, true, assignment = _matched_tiles(x, y, patch)
    value = psnr(matched, true)
    return (value, assignment) if return_assignment else value


# --------------------------------------------------------------------------- labels


def _as_label_list(labels: Labels) -> list[int]:
    return [int(v) for v in torch.as_tensor(labels).flatten().tolist()]


def _recovered_flags(labels_true: Labels, labels_pred: Labels) -> list[float]:
    """Per true label, 1.0 if the predicted multiset covers it: order-free, since attacks may reorder the batch.

    Within a class, the first ``min(#true, #pred)`` occurrences are the recovered ones.
    """
    remaining = Counter(_as_label_list(labels_pred))
    flags = []
    for label in _as_label_list(labels_true):
        flags.append(float(remaining[label] > 0))
        remaining[label] -= 1
    return flags


def label_accuracy(labels_true: Labels, labels_pred: Labels) -> float:
    """Fraction of true labels recovered (multiset intersection / number of true labels), order-free."""
    flags = _recovered_flags(labels_true, labels_pred)
    return sum(flags) / len(flags) if flags else float("nan")


# --------------------------------------------------------------------------- LPIPS (offline only)


def _alexnet_weights_path() -> Path:
    """Where torchvision's AlexNet weights would be cached (honours TORCH_HOME / XDG_CACHE_HOME)."""
    from torchvision.models import AlexNet_Weights

    filename = os.path.basename(AlexNet_Weights.DEFAULT.url)
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


@functools.cache
def _lpips_net(weights_path: Path) -> torch.nn.Module | str:
    """The LPIPS network, or the reason it cannot be built. Only called when the weights are on disk."""
    from torchmetrics.image import LearnedPerceptualImagePatchSimilarity

    try:
        metric = LearnedPerceptualImagePatchSimilarity(net_type="alex", normalize=True)
    except Exception as error:  # a corrupt or mismatched checkpoint: report it, do not crash the audit
        first_line = (str(error).splitlines() or [""])[0]  # torch.load errors span many lines
        return f"lpips skipped: AlexNet weights at {weights_path} failed to load ({type(error).__name__}: {first_line})"
    # The module's own forward only accumulates a batch mean; its network gives per-image scores.
    return metric.net


def _lpips_net_or_reason() -> torch.nn.Module | str:
    path = _alexnet_weights_path()
    if not path.is_file():
        shown = str(path).replace(str(Path.home()), "~", 1)
        return f"lpips skipped: AlexNet weights not found in {Path(shown).parent} (expected {path.name})"
    return _lpips_net(path)


def lpips_status() -> str:
    """One line: whether LPIPS runs and, if not, why. Never triggers a download."""
    outcome = _lpips_net_or_reason()
    if isinstance(outcome, str):
        return outcome
    return f"lpips ready: AlexNet weights at {_alexnet_weights_path()} (images >= {LPIPS_MIN_SIZE} px)"


def lpips_available() -> bool:
    """True when the LPIPS backbone weights are on disk and load."""
    return not isinstance(_lpips_net_or_reason(), str)


def _lpips(x: Tensor, y: Tensor) -> Tensor | None:
    net = _lpips_net_or_reason()
    if isinstance(net, str) or min(x.shape[-2:]) < LPIPS_MIN_SIZE:
        return None
    net = net.to(x.device)
    with torch.no_grad():
        return net(x, y, normalize=True).flatten()


# --------------------------------------------------------------------------- the shuffled / unshuffled split


def _shuffled_mask(shuffled: Tensor, batch: int, n_tiles: int) -> Tensor:
    """Broadcast ``shuffled`` (N,) or (B, N) to a (B, N) bool mask."""
    mask = torch.as_tensor(shuffled).bool()
    if mask.shape not in ((n_tiles,), (batch, n_tiles)):
        raise ValueError(f"shuffled must have shape ({n_tiles},) or ({batch}, {n_tiles}); got {tuple(mask.shape)}")
    return mask.expand(batch, n_tiles).cpu()


def _masked_psnr(a: Tensor, b: Tensor, mask: Tensor) -> list[float | None]:
    """PSNR over the selected tiles of each image (a, b: (B, N, D); mask (B, N)); None where none is selected."""
    return [psnr(a[i, m].reshape(1, -1), b[i, m].reshape(1, -1)).item() if m.any() else None
            for i, m in enumerate(mask)]


def _masked_mean(values: Tensor, mask: Tensor) -> list[float | None]:
    """Mean of values (B, N, ...) over the selected tiles of each image; None where none is selected."""
    return [values[i, m].mean().item() if m.any() else None for i, m in enumerate(mask)]


def _split_columns(
    x: Tensor, y: Tensor, patch: int, mask: Tensor, ssim_map: Tensor, matched: Tensor, true: Tensor
) -> dict[str, list[float | None]]:
    rec = flat_tiles(x, patch)
    tile_sq_err = (rec - true).pow(2)
    # SSIM map per tile; the 11x11 window straddles tile borders, so tile edges mix both sets slightly.
    ssim_tiles = flat_tiles(ssim_map.mean(dim=1, keepdim=True), patch)
    columns: dict[str, list[float | None]] = {}
    for suffix, selected in (("shuffled", mask), ("unshuffled", ~mask)):
        columns[f"mse_{suffix}"] = _masked_mean(tile_sq_err, selected)
        columns[f"psnr_{suffix}"] = _masked_psnr(rec, true, selected)
        columns[f"ssim_{suffix}"] = _masked_mean(ssim_tiles, selected)
        # The assignment puts matched tiles at their true positions, so the mask applies directly.
        columns[f"patch_psnr_{suffix}"] = _masked_psnr(matched, true, selected)
    return columns


# --------------------------------------------------------------------------- the public entry points


def per_image_metrics(
    reconstruction: Tensor,
    truth: Tensor,
    *,
    patch: int | None = None,
    shuffled: Tensor | None = None,
    labels_true: Labels | None = None,
    labels_pred: Labels | None = None,
    lpips: bool = True,
) -> list[dict[str, float]]:
    """One dict of leakage metrics per image (see :func:`leakage_metrics` for the keys).

    ``label_acc`` per image is 1.0 when that image's true label is among the recovered labels (order-free).
    A key whose set is empty for an image (e.g. no shuffled patch) is absent from that image's dict.
    """
    if shuffled is not None and patch is None:
        raise ValueError("shuffled needs patch: the mask indexes patches")
    x, y = _prepare(reconstruction, truth, patch)
    ssim_value, ssim_map = _ssim_with_map(x, y)
    columns: dict[str, list[float | None]] = {
        "mse": _mse(x, y).tolist(),
        "psnr": psnr(x, y).tolist(),
        "ssim": ssim_value.tolist(),
        "fft2d": fft2d_distance(x, y).tolist(),
    }
    if lpips and (lpips_value := _lpips(x, y)) is not None:
        columns["lpips"] = lpips_value.tolist()
    if labels_true is not None and labels_pred is not None:
        flags = _recovered_flags(labels_true, labels_pred)
        if len(flags) != x.shape[0]:
            raise ValueError(f"labels_true has {len(flags)} labels for a batch of {x.shape[0]} images")
        columns["label_acc"] = flags
    if patch is not None:
        matched, true, _ = _matched_tiles(x, y, patch)
        columns["patch_psnr"] = psnr(matched, true).tolist()
        if shuffled is not None:
            mask = _shuffled_mask(shuffled, *true.shape[:2])
            columns.update(_split_columns(x, y, patch, mask, ssim_map, matched, true))
    return [
        {key: values[i] for key, values in columns.items() if values[i] is not None}
        for i in range(x.shape[0])
    ]


def leakage_metrics(
    reconstruction: Tensor,
    truth: Tensor,
    *,
    patch: int | None = None,
    shuffled: Tensor | None = None,
    labels_true: Labels | None = None,
    labels_pred: Labels | None = None,
    lpips: bool = True,
) -> dict[str, float]:
    """Batch means of the per-image leakage metrics.

    Keys: ``mse``, ``psnr``, ``ssim``, ``fft2d``; ``lpips`` when its weights are on disk (see
    :func:`lpips_status`) and images are at least ``LPIPS_MIN_SIZE`` px; ``label_acc`` when both label sets
    are given; ``patch_psnr`` when ``patch`` is given; with ``shuffled`` also ``{mse,psnr,ssim,patch_psnr}``
    ``_{shuffled,unshuffled}``, each averaged over the images that have such patches and absent when none has.
    """
    rows = per_image_metrics(
        reconstruction, truth, patch=patch, shuffled=shuffled,
        labels_true=labels_true, labels_pred=labels_pred, lpips=lpips,
    )
    keys = list(dict.fromkeys(key for row in rows for key in row))
    return {key: float(np.mean([row[key] for row in rows if key in row])) for key in keys}
