"""The boundary between images in [0, 1] (everything outside the model) and model input."""

from __future__ import annotations

import torch
from torch import nn


def _mean_std(model: nn.Module, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    mean = torch.tensor(cfg.get("mean", (0.5, 0.5, 0.5)), dtype=like.dtype, device=like.device)
    std = torch.tensor(cfg.get("std", (0.5, 0.5, 0.5)), dtype=like.dtype, device=like.device)
    return mean.view(1, -1, 1, 1), std.view(1, -1, 1, 1)


def to_model_input(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Normalise (B, 3, H, W) images in [0, 1] with the model's own mean and std."""
    mean, std = _mean_std(model, images)
    return (images - mean) / std


def from_model_input(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Inverse of ``to_model_input`` (no clamping: attacks decide how to box)."""
    mean, std = _mean_std(model, x)
    return x * std + mean
