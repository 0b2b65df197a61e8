"""Trap weights: a dishonest server's planting after Boenisch et al., "When the Curious Abandon Honesty:
Federated Learning Is Not Private" (EuroS&P 2023), applied to a timm ViT as that paper's idea carries over.

Built independently of imprint (no planted patch channels, position code, sink channel or LayerNorm-undo
channel): the patch and position embeddings stay the honest (global) weights. In the first block(s):

- attention is silenced (its projection zero), so the MLP sees the embedded tokens themselves;
- fc1's rows are random Gaussian directions times a large k (GELU then acts as ReLU), each bias set at a
  high quantile of that unit's pre-activation over the server's own tokens, so that a unit fires for about
  one token of a client's batch ("traps" a token); a unit that would fire for the CLS token (the same in every
  image, known from the weights) points the other way;
- fc2 is scaled down, so the residual stream the later blocks see is the embedded tokens, all but unchanged.

A unit that fired for exactly one token has fc1 gradient rows dW_i / db_i equal to that token after norm2,
whatever the rest of the model does. Undoing norm2 (its weight and bias are in the weights sent) gives
LN(W x + b + pos[n]); least squares against the honest patch embedding (W, b) and position embeddings
recovers the patch x and its position n, where the embedding has room: D >= 3*P*P + 2 (x, LayerNorm's mean
and scale). An MJP-masked token carries the shared unknown embedding: it reads as position -1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import timm
import torch
from torch import Tensor, nn

from ..models import from_model_input, to_model_input
from .base import PATCH_WEIGHT, POS_EMBED, NotApplicable, Observation, Reconstruction, ThreatModel, Timer, patch_offset
from .base import register_attack
from .imprint import assemble

__all__ = ["Trap", "plant_trap", "trap_blocks"]

# Blocks planted. Patches read exactly (ViT-Ti/4, CIFAR-10, batch 1/4/8): 1 block 46/31/20%, 2: 54/40/29,
# 4: 61/50/40, 6: 64/54/45, all 11 but the last: 70/60/54. Four keep most of the gain with the planting in a few
# first blocks, as trap weights are; planting the whole stack is imprint's regime.
BLOCKS = 4
# Each unit fires for one patch token in this many images (server's quantile 1 / (8 * 64)). Client tokens fire
# more often than the server's photos predict, so a low rate serves small batches too: 59/48/39% at batch
# 1/4/8 against 68/37/11 planted for one image and 54/38/38 for 32 (4 blocks, 3 batches each).
EXPECTED_BATCH = 8
SHARPNESS = 1e4  # k = SHARPNESS / (a unit's spread over the server's tokens): GELU's soft step (|z| < 5) spans
# 5e-4 spreads, so a token rarely sits in it and leaks a fraction of itself into a unit
FC2_SCALE = 1e-12  # fc2's scale: activations up to ~1e4 spreads then write < 1e-7 into the residual stream,
# below what later trap blocks resolve; the gradients stay far above float32's floor
# A lone token's LayerNorm statistics and its fit to the honest embedding (relative residual): measured within
# 3e-7 and 5e-7; mixes of tokens from 1e-2 up. Between them, a token with a faint leak from a second one (at
# GELU's step) still reads its patch to 4e-4.
STATS_TOLERANCE = 1e-3
RESIDUAL_TOLERANCE = 1e-3
DUPLICATE = 0.5 / 255  # two reads of one token differ by less than this in every value
UNKNOWN = -1  # the position of a token that carried MJP's unknown position embedding


def _architecture(model_name: str, model_kwargs: dict[str, Any]) -> nn.Module:
    """The model's shape without weights (the decoder reads the weights from the observation)."""
    with torch.device("meta"):
        return timm.create_model(model_name, **model_kwargs)


def _build(model_name: str, model_kwargs: dict[str, Any], weights: dict[str, Tensor]) -> nn.Module:
    model = timm.create_model(model_name, **model_kwargs)
    model.load_state_dict(weights, strict=True)
    return model.eval()


def check_plantable(model: nn.Module) -> None:
    """NotApplicable, with the reason in one line, where trap weights cannot be planted and read."""
    if getattr(model, "pos_embed", None) is None or not isinstance(model.pos_embed, nn.Parameter):
        raise NotApplicable("trap: needs a learnable absolute position embedding (pos_embed)")
    if getattr(model, "dynamic_img_size", False):
        raise NotApplicable("trap: needs a fixed-size position embedding (dynamic_img_size is set)")
    if not isinstance(model.norm_pre, nn.Identity) or not isinstance(model.patch_embed.norm, nn.Identity):
        raise NotApplicable("trap: a LayerNorm before the blocks hides the embedding (norm_pre / patch norm)")
    if len(model.blocks) < 2:
        raise NotApplicable("trap: needs at least two blocks (the last block's MLP output never reaches the loss)")
    if not all(isinstance(getattr(b.mlp, "fc1", None), nn.Linear) for b in model.blocks):
        raise NotApplicable("trap: needs a plain MLP (fc1, activation, fc2) in every block")
    patch = model.patch_embed.patch_size[0]
    values = 3 * patch * patch
    if model.embed_dim < values + 2:
        raise NotApplicable(f"trap: {model.embed_dim} channels cannot pin down a patch's {values} values "
                            "and LayerNorm's mean and scale (needs D >= 3*P*P + 2)")


def trap_blocks(model: nn.Module, count: int) -> range:
    """The first ``count`` blocks, never the last (nothing reads its patch tokens' MLP output)."""
    return range(min(count, len(model.blocks) - 1))


@torch.no_grad()
def plant_trap(
    model_name: str,
    weights: dict[str, Tensor],
    images: Tensor,
    *,
    model_kwargs: dict[str, Any] | None = None,
    blocks: int = BLOCKS,
    batch: int = EXPECTED_BATCH,
    seed: int = 0,
) -> dict[str, Tensor]:
    """The weights to send: the global ``weights`` with trap units in the first ``blocks`` blocks.

    Thresholds come from ``images``, the server's own (B, 3, H, W) in [0, 1]: each unit fires for one of
    ``batch`` images' patch tokens. Every parameter keeps its name, shape and dtype.
    """
    model = _build(model_name, model_kwargs or {}, weights)
    check_plantable(model)
    generator = torch.Generator().manual_seed(seed)
    tokens = model._pos_embed(model.patch_embed(to_model_input(model, images.float())))
    prefix = model.num_prefix_tokens
    rate = 1 / (batch * model.patch_embed.num_patches)
    for index in trap_blocks(model, blocks):
        block = model.blocks[index]
        _silence_attention(block)
        patch_tokens = block.norm2(tokens[:, prefix:]).reshape(-1, model.embed_dim)
        _plant_traps(block.mlp, patch_tokens, block.norm2(tokens[0, :prefix]), rate, generator)
        tokens = block(tokens)
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def _silence_attention(block: nn.Module) -> None:
    """Attention adds nothing: the MLP's input is the embedded token itself, not a mix of the image's tokens."""
    block.attn.proj.weight.zero_()
    if block.attn.proj.bias is not None:
        block.attn.proj.bias.zero_()


def _plant_traps(mlp: nn.Module, tokens: Tensor, prefix: Tensor, rate: float, generator: torch.Generator) -> None:
    """fc1 rows k * (random unit direction), biases at each unit's (1 - rate) quantile of the server's patch
    tokens; fc2 scaled down. ``prefix`` are the (CLS) tokens every image shares: a unit that would fire for
    them points the other way (it would hold a copy from every image)."""
    units, dim = mlp.fc1.weight.shape
    directions = torch.randn(units, dim, generator=generator, dtype=torch.float64)
    directions /= directions.norm(dim=1, keepdim=True)
    thresholds = _thresholds(directions, tokens, rate)
    on_prefix = (directions @ prefix.double().T > thresholds[:, None]).any(1)
    directions[on_prefix] *= -1
    thresholds[on_prefix] = _thresholds(directions[on_prefix], tokens, rate)
    sharpness = SHARPNESS / (directions @ tokens.double().T).std(dim=1)
    mlp.fc1.weight.copy_(sharpness[:, None] * directions)
    mlp.fc1.bias.copy_(-sharpness * thresholds)
    mlp.fc2.weight.mul_(FC2_SCALE)
    if mlp.fc2.bias is not None:
        mlp.fc2.bias.mul_(FC2_SCALE)


def _thresholds(directions: Tensor, tokens: Tensor, rate: float) -> Tensor:
    """(units,) midway between the server's last token above each unit's (1 - rate) quantile and its first below."""
    measured = directions @ tokens.double().T  # (units, tokens)
    above = min(max(round(rate * measured.shape[1]), 1), measured.shape[1] - 1)
    top = measured.topk(above + 1, dim=1).values
    return (top[:, above - 1] + top[:, above]) / 2


# --- decoding: what the reply says ---------------------------------------------------------------


@dataclass
class EmbeddingFit:
    """Least-squares reads of LayerNorm outputs against the honest embedding, at each one's best position."""

    patches: Tensor  # (M, p) patch values as the model reads them (normalised)
    candidate: Tensor  # (M,) index of the best candidate position embedding
    residual: Tensor  # (M,) the fit's residual there, relative to the norm of b + pos
    scale: Tensor  # (M,) sigma: the token's LayerNorm scale sqrt(var + eps)


def _fired(grad_w: Tensor, grad_b: Tensor, norm_weight: Tensor, norm_bias: Tensor) -> Tensor:
    """(M, D) for each unit that fired, dW_i / db_i with norm2's affine undone: a LayerNorm output where one
    token fired it alone, a mix weighted by the tokens' gradients otherwise."""
    fired = grad_b != 0
    normed = grad_w.double()[fired] / grad_b.double()[fired, None]
    return (normed - norm_bias.double()) / norm_weight.double()


def _position_embeddings(weights: dict[str, Tensor], model: nn.Module) -> tuple[Tensor, Tensor]:
    """(D, C) candidate position embeddings of a patch token and the (C,) position each reads as."""
    pos = weights[POS_EMBED].reshape(-1, model.embed_dim)[patch_offset(model) :]
    positions = torch.arange(len(pos))
    unknown = weights.get("unk_pos_embed")
    if unknown is not None:
        pos = torch.cat([pos, unknown.reshape(1, -1)])
        positions = torch.cat([positions, torch.tensor([UNKNOWN])])
    return pos.double().T, positions


def _fit_embedding(normed: Tensor, embed_w: Tensor, embed_b: Tensor, pos: Tensor) -> EmbeddingFit:
    """Least squares of W x + b + pos[n] = mu + sigma * normed for (x, sigma, mu), every candidate n at once."""
    count, dim = normed.shape
    ones = torch.ones(count, dim, 1, dtype=torch.float64)
    system = torch.cat([-embed_w.expand(count, -1, -1), normed[:, :, None], ones], dim=2)  # (M, D, p + 2)
    target = (embed_b[:, None] + pos).expand(count, -1, -1)  # (M, D, C)
    solution = torch.linalg.lstsq(system, target).solution  # (M, p + 2, C)
    residual = (system @ solution - target).norm(dim=1) / target.norm(dim=1)  # (M, C)
    best = residual.argmin(dim=1)
    at_best = solution[torch.arange(count), :, best]  # (M, p + 2)
    values = embed_w.shape[1]
    return EmbeddingFit(at_best[:, :values], best, residual[torch.arange(count), best], at_best[:, values])


def _lone(normed: Tensor, fit: EmbeddingFit, eps: float) -> Tensor:
    """(M,) whether each read is one token: a LayerNorm output (mean 0, mean square 1 - eps / sigma^2) of an
    embedded patch. A mix of tokens at different positions does not fit the embedding; a mix at one position
    (batch > 1) fits, but its mean square is off (1 - 2ab(1 - cos) for weights a + b = 1)."""
    mean_square = normed.pow(2).mean(1)
    return ((fit.residual < RESIDUAL_TOLERANCE) & (normed.mean(1).abs() < STATS_TOLERANCE)
            & ((mean_square - (1 - eps / fit.scale.pow(2))).abs() < STATS_TOLERANCE))


def _dedupe(patches: Tensor, positions: Tensor) -> tuple[Tensor, Tensor]:
    """One copy of a token read by several units: the first read of every group at one position whose values
    agree within half an 8-bit step."""
    same = (positions[:, None] == positions[None, :]) & (torch.cdist(patches, patches, p=float("inf")) <= DUPLICATE)
    kept = torch.zeros(len(patches), dtype=torch.bool)
    for i in range(len(patches)):
        kept[i] = not (same[i, :i] & kept[:i]).any()
    return patches[kept], positions[kept]


class Trap:
    """Plant trap weights in the weights a client gets, then read its patches off its gradient.

    ``plant`` is the server's step before sending; ``__call__`` decodes the reply to the planted weights
    (``obs.weights`` are the planted weights that were sent).
    """

    name = "trap"

    def __init__(self, blocks: int = BLOCKS, batch: int = EXPECTED_BATCH, seed: int = 0) -> None:
        self.blocks = blocks
        self.batch = batch
        self.seed = seed

    def plant(self, model_name: str, weights: dict[str, Tensor], images: Tensor,
              model_kwargs: dict[str, Any] | None = None) -> dict[str, Tensor]:
        return plant_trap(model_name, weights, images, model_kwargs=model_kwargs, blocks=self.blocks,
                          batch=self.batch, seed=self.seed)

    def reads(self, model_name: str, weights: dict[str, Tensor], model_kwargs: dict[str, Any]) -> list[str]:
        model = _architecture(model_name, model_kwargs)
        return [f"blocks.{i}.mlp.fc1.{part}" for i in range(len(model.blocks) - 1) if _is_planted(weights, i)
                for part in ("weight", "bias")]

    def __call__(self, obs: Observation) -> Reconstruction:
        if obs.kind == "update" and (obs.local_steps not in (None, 1) or obs.local_optimizer not in (None, "sgd")):
            raise NotApplicable("trap: reads one gradient (or one plain SGD step), not a multi-step update")
        model = _architecture(obs.model_name, obs.model_kwargs)
        check_plantable(model)
        blocks = [i for i in range(len(model.blocks) - 1) if _is_planted(obs.weights, i)]
        if not blocks:
            raise NotApplicable("trap: the weights sent carry no trap block (no silenced attention)")
        with Timer() as timer:
            reads = [self._read_block(obs, model, i) for i in blocks]
            patches, positions = _dedupe(torch.cat([r[0] for r in reads]), torch.cat([r[1] for r in reads]))
            patch = model.patch_embed.patch_size[0]
            images = assemble(patches, positions, obs.num_examples, tuple(model.patch_embed.grid_size), patch)
        return Reconstruction(
            images=images,
            threat_model=ThreatModel(architecture=obs.model_name, labels="none", server="malicious",
                                     patch_read="exact"),
            seconds=timer.seconds,
            start=torch.full_like(images, 0.5),
            patches=patches,
            patch_positions=positions,
            info={"trap_blocks": len(blocks), "lone_units": sum(len(r[0]) for r in reads),
                  "patches_recovered": len(patches), "patches_with_position": int((positions >= 0).sum()),
                  "tokens": obs.num_examples * int(model.patch_embed.num_patches)},
        )

    @staticmethod
    def _read_block(obs: Observation, model: nn.Module, index: int) -> tuple[Tensor, Tensor]:
        """Patches in [0, 1] (M, p) and positions (M,) of the tokens that fired a unit of one block alone."""
        prefix = f"blocks.{index}"
        normed = _fired(obs.tensors[f"{prefix}.mlp.fc1.weight"], obs.tensors[f"{prefix}.mlp.fc1.bias"],
                        obs.weights[f"{prefix}.norm2.weight"], obs.weights[f"{prefix}.norm2.bias"])
        embed_w = obs.weights[PATCH_WEIGHT].reshape(model.embed_dim, -1).double()
        embed_b = obs.weights.get("patch_embed.proj.bias", torch.zeros(model.embed_dim)).double()
        pos, candidates = _position_embeddings(obs.weights, model)
        fit = _fit_embedding(normed, embed_w, embed_b, pos)
        lone = _lone(normed, fit, model.blocks[index].norm2.eps)
        patch = model.patch_embed.patch_size[0]
        pixels = from_model_input(model, fit.patches[lone].float().reshape(-1, 3, patch, patch)).clamp(0, 1)
        return pixels.flatten(1), candidates[fit.candidate[lone]]


def _is_planted(weights: dict[str, Tensor], index: int) -> bool:
    proj = weights.get(f"blocks.{index}.attn.proj.weight")
    return proj is not None and not bool(proj.any())


@register_attack("trap")
def build_trap(seed: int = 0, blocks: int = BLOCKS, batch: int = EXPECTED_BATCH, **budget: Any) -> Trap:
    """Trap weights (planting). Budget options (steps, restarts) are accepted and ignored: it reads the reply
    once."""
    return Trap(blocks=blocks, batch=batch, seed=seed)
