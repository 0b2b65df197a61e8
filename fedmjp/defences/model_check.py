"""The client's check of the weights it received, before it trains on them: planted structure, in a first round
as well as later ones.

A server knows which check clients run (it is open source), so no single construction's signature is enough:
``fedmjp.attacks.imprint_evasion`` plants imprint bins past every weight-shape test below, and a server that
knows this whole check plants past it too in a first round (coarse banks of bins, the offsets routed through
norm2, units decorrelated just past the bound): on CIFAR-10 it read 0.84 of a batch of one from the results'
4-block ViT-Ti/4 (every patch from the 12-block one) and under 1% of a batch of eight.
The detector part of ``fedmjp results`` measures each test against those planters, trap weights, and over
200 honest models. The tests:

- weight shape (cheap, and they refuse the naive construction): an fc1 of one repeated direction (stable rank
  near 1), fc2 columns all equal, an attention projection exactly zero;
- ranges: every tensor's largest entry against what honest ViTs reach (``RANGES``). Bins and traps as built
  need steps far sharper than that; a planter that knows the ranges gets its sharpness through norm2 instead;
- on the client's own batch (what the weights do to it, not what they look like): in each block, hidden units
  whose pre-activations over the client's tokens are affine copies of another unit's (``parallel_units``:
  what a bank of fine bins along one direction is, whatever its weights hold on channels the tokens never
  use). Units that fire for one token or almost none (trap weights) were measured too and dropped: honest
  high-lr Adam rounds had up to 60% of a block's units so;
- with history (the global weights this client last accepted): a tensor whose RMS jumps by orders of magnitude.

Any finding refuses the model.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["REFUSAL", "Finding", "check_batch", "check_model", "check_original", "check_weights"]

# How a refusal begins: the client's error reason, and so the server's fault record and the audit summary.
REFUSAL = "refused by client model check"

# An fc1 of one binning bank is 1.0. Honest blocks measure 74 to 89 at init, but high-lr Adam collapses rows
# onto the common update: 2.6 after 30 FedAvg rounds at 3e-3 (the original bound, 5, refused 35 of 60 such
# rounds).
MIN_STABLE_RANK = 1.5
ORIGINAL_MIN_STABLE_RANK = 5.0
EQUAL_COLUMNS = 1e-3  # spread of fc2's columns around their mean, relative to fc2's norm
MAX_NORM_RATIO = 100.0  # a tensor's RMS against the last accepted one, either way
RMS_FLOOR = 0.01  # added to both RMS values: a tensor initialised near zero (cls_token, biases) may grow
# 1 - |correlation| of two hidden units' pre-activations over the client's tokens below which they are one
# unit shifted: a bank of bins measures 1e-14 (float64 round-off); honest high-lr Adam rounds were measured
# as close as 2.5e-7 (their rows collapse onto the common update direction).
PARALLEL = 1e-9
MAX_PARALLEL_SHARE = 0.01  # share of a block's units that may have such a partner
# The check as it stood before it had ranges and looked at the client's batch (``check_original``): what the
# "original" planter passes, kept so that both checks are measured side by side.
ORIGINAL_TESTS = ("fc1_stable_rank", "fc2_equal_columns", "attention_zero", "norm_jump")

_FC1 = re.compile(r"(.*)\.mlp\.fc1\.weight$")
_FC2 = re.compile(r"(.*)\.mlp\.fc2\.weight$")
_ATTN_PROJ = re.compile(r"(.*)\.attn\.proj\.weight$")

# The largest |entry| a tensor of each kind may hold (a name's first matching pattern): ten times the largest
# honest entry measured, over random inits (ViT-Ti/4, ViT-S/4, ViT-S/16 and their MJP twins) and 150 steps of
# training at learning rates high enough to diverge (Adam 1e-2, SGD 0.5 with momentum): fc1 3.8, its bias 1.3,
# fc2 5.6, attention 21, norms 63, patch embedding 10.5, position embedding and CLS 3.5, head 333.
# ``fedmjp results``' detector part re-measures the honest maxima.
RANGES: tuple[tuple[str, float], ...] = (
    (r"\.mlp\.fc1\.weight$", 40.0),
    (r"\.mlp\.fc1\.bias$", 15.0),
    (r"\.mlp\.fc2\.(weight|bias)$", 60.0),
    (r"\.attn\.(qkv|proj)\.weight$", 200.0),
    (r"\.attn\.(qkv|proj)\.bias$", 30.0),
    (r"norm\d?\.(weight|bias)$", 600.0),
    (r"^(pos_embed|unk_pos_embed|cls_token)$", 40.0),
    (r"^patch_embed\.", 100.0),
    (r"^head\.", 3000.0),
)
_RANGES = tuple((re.compile(pattern), bound) for pattern, bound in RANGES)


@dataclass(frozen=True)
class Finding:
    """One test that fired: which, on which tensor, the value measured and the bound it crossed."""

    test: str
    tensor: str
    value: float
    bound: float

    def __str__(self) -> str:
        return f"{self.test} on {self.tensor}: {self.value:.3g} (bound {self.bound:g})"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def stable_rank(weight: Tensor) -> float:
    """Frobenius norm squared over spectral norm squared: 1.0 for a matrix of one repeated row."""
    w = weight.detach().double().flatten(1)
    spectral = torch.linalg.matrix_norm(w, ord=2)
    return 0.0 if spectral == 0 else float(w.pow(2).sum() / spectral**2)


def column_spread(weight: Tensor) -> float:
    """How far fc2's columns are from all being one column, relative to its norm (0: all equal or all zero)."""
    w = weight.detach().double()
    norm = w.norm()
    return 0.0 if norm == 0 else float((w - w.mean(1, keepdim=True)).norm() / norm)


def range_bound(name: str) -> float | None:
    """The largest |entry| an honest tensor of this name's kind holds, with margin (None: not bounded)."""
    return next((bound for pattern, bound in _RANGES if pattern.search(name)), None)


def check_weights(weights: Mapping[str, Tensor], accepted: Mapping[str, Tensor] | None = None,
                  min_stable_rank: float = MIN_STABLE_RANK) -> list[Finding]:
    """Every weight-only test that fires on ``weights`` (empty: the model looks honest).

    ``accepted`` are the global weights this client last trained on (None on its first round).
    """
    findings: list[Finding] = []
    for name, value in weights.items():
        if _FC1.match(name) and (rank := stable_rank(value)) < min_stable_rank:
            findings.append(Finding("fc1_stable_rank", name, rank, min_stable_rank))
        if _FC2.match(name) and (spread := column_spread(value)) < EQUAL_COLUMNS:
            findings.append(Finding("fc2_equal_columns", name, spread, EQUAL_COLUMNS))
        if _ATTN_PROJ.match(name) and not bool(value.any()):
            findings.append(Finding("attention_zero", name, 0.0, 0.0))
        bound = range_bound(name)
        if bound is not None and value.numel() and (largest := float(value.detach().abs().max())) > bound:
            findings.append(Finding("range", name, largest, bound))
        if accepted is not None and name in accepted:
            ratio = _rms_ratio(value, accepted[name])
            if not 1 / MAX_NORM_RATIO <= ratio <= MAX_NORM_RATIO:
                findings.append(Finding("norm_jump", name, ratio, MAX_NORM_RATIO))
    return findings


def check_original(weights: Mapping[str, Tensor], accepted: Mapping[str, Tensor] | None = None) -> list[Finding]:
    """The check as it stood before ranges and the client's batch: weight shape (stable-rank bound 5) and the
    norm jump."""
    return [f for f in check_weights(weights, accepted, ORIGINAL_MIN_STABLE_RANK) if f.test in ORIGINAL_TESTS]


def _rms_ratio(new: Tensor, old: Tensor) -> float:
    """(RMS(new) + floor) / (RMS(old) + floor): orders of magnitude, not the growth of a near-zero init."""
    def rms(t: Tensor) -> float:
        return float(t.detach().double().pow(2).mean().sqrt()) if t.numel() else 0.0

    return (rms(new) + RMS_FLOOR) / (rms(old) + RMS_FLOOR)


@torch.no_grad()
def fc1_preactivations(model: nn.Module, images: Tensor) -> dict[str, Tensor]:
    """(patch tokens, hidden) pre-activations of every block's fc1 over a batch, in evaluation mode (no jigsaw),
    keyed by the fc1 weight's name."""
    from ..models import to_model_input

    found: dict[str, Tensor] = {}
    prefix = model.num_prefix_tokens  # CLS: no patch of the client's, and no planting bins it
    hooks = [block.mlp.fc1.register_forward_hook(
        lambda _module, _inputs, output, key=f"blocks.{index}.mlp.fc1.weight": found.__setitem__(
            key, output.detach()[:, prefix:].reshape(-1, output.shape[-1])))
        for index, block in enumerate(model.blocks)]
    was_training = model.training
    try:
        model.eval()
        model(to_model_input(model, images.float()))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return found


def parallel_share(preactivations: Tensor, within: float = PARALLEL) -> float:
    """Share of units whose pre-activations over the tokens are an affine copy of another unit's
    (|correlation| within ``within`` of 1). Units constant over the tokens are left out."""
    centred = preactivations.double() - preactivations.double().mean(0)
    spread = centred.norm(dim=0)
    live = spread > 1e-9 * float(spread.max().clamp(min=1e-300))
    if int(live.sum()) < 2:
        return 0.0
    unit = centred[:, live] / spread[live]
    correlation = (unit.T @ unit).abs()
    correlation.fill_diagonal_(0)
    return float((correlation.max(0).values > 1 - within).sum()) / preactivations.shape[1]


def check_batch(model: nn.Module, images: Tensor) -> list[Finding]:
    """The tests of what the model (loaded with the received weights) does to the client's own ``images``."""
    findings: list[Finding] = []
    for name, preactivations in fc1_preactivations(model, images).items():
        if (share := parallel_share(preactivations)) > MAX_PARALLEL_SHARE:
            findings.append(Finding("parallel_units", name, share, MAX_PARALLEL_SHARE))
    return findings


def check_model(model: nn.Module, weights: Mapping[str, Tensor], accepted: Mapping[str, Tensor] | None = None,
                images: Tensor | None = None) -> list[Finding]:
    """Every test that fires: on the weights, against ``accepted`` when given, and on the client's ``images``
    when given (``model`` is the client's architecture; the weights are loaded into it for that)."""
    findings = check_weights(weights, accepted)
    if images is not None and len(images):
        model.load_state_dict(dict(weights))
        findings += check_batch(model, images)
    return findings
