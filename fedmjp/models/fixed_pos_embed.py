"""A fixed (non-learnable) position embedding: a 2-D sin-cos table with ``requires_grad`` off, so no
position-embedding gradient exists to share (APRIL's closed form needs it)."""

from __future__ import annotations

import torch
from timm.layers.pos_embed_sincos import build_sincos2d_pos_embed
from torch import nn


def sincos_pos_embed(model: nn.Module) -> torch.Tensor:
    """A 2-D sin-cos table shaped like ``model.pos_embed`` (prefix-token rows zero, as in MAE)."""
    pos = model.pos_embed
    grid = list(model.patch_embed.grid_size)
    table = build_sincos2d_pos_embed(grid, dim=pos.shape[-1], dtype=pos.dtype)
    prefix = pos.shape[1] - table.shape[0]
    if prefix < 0:
        raise ValueError(f"pos_embed has {pos.shape[1]} rows for a {grid[0]}x{grid[1]} patch grid")
    return torch.cat([table.new_zeros(prefix, table.shape[1]), table]).unsqueeze(0)


def fix_pos_embed(model: nn.Module) -> nn.Module:
    """Replace the learnable position embedding by a fixed sin-cos table (in place)."""
    if not isinstance(getattr(model, "pos_embed", None), nn.Parameter):
        raise ValueError("model.fixed_pos_embed: this model has no learnable pos_embed to fix")
    with torch.no_grad():
        model.pos_embed.copy_(sincos_pos_embed(model))
    model.pos_embed.requires_grad_(False)
    return model
