"""Defences a client applies before its reply leaves, so readers can place MJP among them.

- A fixed (non-learnable) position embedding: a 2-D sin-cos table with ``requires_grad`` off,
  so no position-embedding gradient exists to share (APRIL's closed form needs it).
- Gradient pruning (Zhu et al., "Deep Leakage from Gradients"): zero the smallest-magnitude
  fraction of every tensor of the reply.
- Local differential privacy is Flower's own ``LocalDpMod`` (see ``clients/defence_mods.py``). It
  clips and noises *new weights* (reply - sent); fedmjp replies carry gradients (FedSGD) or updates
  (FedAvg), so ``to_weights`` / ``from_weights`` convert around it on the client: a gradient g is the
  weights ``sent - g`` (one SGD step at unit rate), an update u the weights ``sent + u``. The wire
  format does not change, so the server, the adversary and the aggregation see a reply as always.

Tensors are keyed by parameter name; nothing here imports Flower.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from timm.layers.pos_embed_sincos import build_sincos2d_pos_embed
from torch import nn

from .train import ReplyKind, step_sign


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


def prune(tensors: Mapping[str, torch.Tensor], fraction: float) -> dict[str, torch.Tensor]:
    """Zero the ``floor(fraction * numel)`` smallest-magnitude entries of every tensor."""
    if not 0 <= fraction < 1:
        raise ValueError(f"prune: fraction must be in [0, 1), got {fraction}")
    pruned = {}
    for name, tensor in tensors.items():
        flat = tensor.detach().flatten().clone()
        count = int(fraction * flat.numel())
        if count:
            flat[torch.argsort(flat.abs(), stable=True)[:count]] = 0
        pruned[name] = flat.reshape(tensor.shape)
    return pruned


def to_weights(sent: Mapping[str, torch.Tensor], tensors: Mapping[str, torch.Tensor],
               kind: ReplyKind) -> dict[str, torch.Tensor]:
    """The new weights a reply stands for, keyed (and ordered) like ``sent``, in float64.

    Entries the reply does not carry (buffers, frozen parameters) are the sent weights unchanged.
    """
    sign = step_sign(kind)
    return {name: value.double() + sign * tensors[name].double() if name in tensors else value.clone()
            for name, value in sent.items()}


def from_weights(sent: Mapping[str, torch.Tensor], weights: Mapping[str, torch.Tensor], kind: ReplyKind,
                 names: list[str]) -> dict[str, torch.Tensor]:
    """Back from new weights to the reply's tensors (only ``names``, in that order), float32."""
    sign = step_sign(kind)
    return {name: (sign * (weights[name].double() - sent[name].double())).float() for name in names}


def l2_norm(tensors: Mapping[str, torch.Tensor]) -> float:
    """The L2 norm of all tensors together (what clipping bounds)."""
    return float(torch.sqrt(sum(t.double().pow(2).sum() for t in tensors.values())))
