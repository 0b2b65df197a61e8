"""APRIL closed form (Lu et al., CVPR 2022): the input patches of a ViT from two gradients.

The patch embedding plus learnable position embedding is z = x W_e^T + b_e + E, with x the
(n, p) normalised patches (p = 3 * P * P, in the Conv2d weight order (c, row, col)). Hence

    dL/dE_patch = dL/dz = G        (n, d)
    dL/dW_e     = G^T x            (d, p)

and for one example x is the least-squares solution of G^T x = dL/dW_e, exact when n <= d and
G has full rank. With MJP, shuffled positions use a shared unknown embedding, so their rows of
dL/dE are zero while their patches still feed dL/dW_e: the solve is corrupted, by design of the
defence (this attack does not know about MJP; the adaptive attacker does).
"""

from __future__ import annotations

import functools
import json
from typing import Any

import timm
import torch
from torch import nn

from ..models import from_model_input
from ..models.patches import from_tiles
from .base import PATCH_WEIGHT, POS_EMBED, NotApplicable, Observation, Reconstruction, ThreatModel, Timer, patch_rows
from .base import register_attack
from .labels import HEAD_BIAS, HEAD_WEIGHT, recover_labels


def _check_applicable(obs: Observation) -> None:
    if obs.num_examples != 1:
        raise NotApplicable(f"april: closed form needs batch size 1 (got {obs.num_examples})")
    if obs.kind == "update":
        # One SGD step: update = -lr * gradient, a scale that cancels in the solve.
        if obs.local_steps is not None and obs.local_steps > 1:
            raise NotApplicable(f"april: closed form needs a single local step (got {obs.local_steps})")
        if obs.local_optimizer is not None and obs.local_optimizer != "sgd":
            raise NotApplicable(f"april: an {obs.local_optimizer} update is not a scaled gradient")
    missing = [name for name in (POS_EMBED, PATCH_WEIGHT) if name not in obs.tensors]
    if missing:
        raise NotApplicable(f"april: needs a learnable position embedding and patch embedding (missing {missing})")


def _layout(obs: Observation) -> nn.Module:
    """The architecture without weights (meta device): the solve needs only its layout and mean/std."""
    return _cached_layout(obs.model_name, json.dumps(obs.model_kwargs, sort_keys=True, default=repr))


@functools.lru_cache(maxsize=16)
def _cached_layout(name: str, kwargs_json: str) -> nn.Module:
    # Built once per architecture: building a timm model costs more than the solve itself.
    with torch.device("meta"):
        return timm.create_model(name, **json.loads(kwargs_json))


def solve_patches(grad_pos_rows: torch.Tensor, grad_patch_weight: torch.Tensor,
                  driver: str = "gelsy") -> tuple[torch.Tensor, int]:
    """Least-squares x (n, p) from G (n, d) and dL/dW_e (d, 3, P, P) in float64, and the rank of G."""
    g = grad_pos_rows.double()
    dw = grad_patch_weight.double().flatten(1)
    # gelsy (QR with column pivoting) returns the minimum-norm solution when G is rank deficient
    # (MJP's zero rows), like the SVD-based gelsd, at a fraction of its cost on a tall (d, n) system.
    result = torch.linalg.lstsq(g.T, dw, driver=driver)
    return result.solution, int(result.rank)


def patches_to_image(patches: torch.Tensor, grid: tuple[int, int], patch: int) -> torch.Tensor:
    """(n, 3*P*P) rows in row-major grid order -> (1, 3, H, W)."""
    return from_tiles(patches.reshape(-1, 3, patch, patch), grid).unsqueeze(0)


class April:
    """The closed-form APRIL attack (batch size 1, gradient or one-step SGD update)."""

    name = "april"

    def __call__(self, obs: Observation) -> Reconstruction:
        _check_applicable(obs)
        with Timer() as timer:
            model = _layout(obs)
            rows = patch_rows(model, obs.tensors[POS_EMBED])
            patches, rank = solve_patches(rows, obs.tensors[PATCH_WEIGHT])
            normalised = patches_to_image(patches, tuple(model.patch_embed.grid_size), model.patch_embed.patch_size[0])
            images = from_model_input(model, normalised.float()).clamp(0, 1)
            labels = recover_labels(obs) if {HEAD_BIAS, HEAD_WEIGHT} & obs.tensors.keys() else None
        return Reconstruction(
            images=images,
            threat_model=ThreatModel(architecture=obs.model_name, labels="recovered" if labels is not None else "none"),
            seconds=timer.seconds,
            labels=labels,
            start=torch.full_like(images, 0.5),  # what an attacker knows without the gradient
            info={"positions": rows.shape[0], "embed_dim": rows.shape[1], "rank": rank},
        )


@register_attack("april")
def build_april(**budget: Any) -> April:
    """APRIL closed form. Budget options (steps, restarts, seed) are accepted and ignored: it has none."""
    return April()
