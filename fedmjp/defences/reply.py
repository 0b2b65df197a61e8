"""Defences a client applies to its reply before it leaves, so readers can place MJP among them.

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

from ..federation.train import ReplyKind, step_sign


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
