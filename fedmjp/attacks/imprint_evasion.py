"""How an imprint server plants past the client's model check when it knows the check (it is open source).

Each counter-move leaves what the bins measure untouched, or costs the attack as little as the check allows:

- ``original``: the check as it stood before it looked at the client's batch (weight-shape signatures only).
  fc1's stable rank: every row gets a large random part on the known-zero channels, summing to zero there. A
  token's known-zero channels all read one value (-mu/sigma) after LayerNorm, so that part adds exactly
  nothing to any pre-activation, and the rows' gradients are unchanged. fc2's equal columns: each unit's sink
  weight gets its own random scale, which the decoder divides out (it knows what it sent). Zero attention:
  the projection keeps its honest weights and the value rows of ``qkv`` are zeroed instead, which silences
  attention as exactly.
- ``current``: the check in :mod:`fedmjp.defences.model_check` now, imported, so the planter follows it when it changes.
  On top of the above: every tensor within the check's ranges (norm2's weight raised to its bound, fc1 scaled
  down to fit, which softens the steps), and hidden units decorrelated on the tokens (each row gets its own
  random part on the token channels, the least that takes every pair of units past the ``parallel_units``
  bound on the server's own tokens). Fine banks of bins cannot survive that, so units are grouped in coarse
  banks of ``BINS_PER_DIRECTION`` along many directions. The thresholds' biases come mostly through norm2's
  bias on a few known-zero channels made constant (``fit_ranges``). The norm jump against a client's accepted
  weights is not evaded: norm2's weight alone jumps far more than honest weights move in a round.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

KnownCheck = Literal["none", "original", "current"]

# Units of one bank past the current check. On the 12-block ViT-Ti/4 and CIFAR-10: 64 passed the check and read
# all of a batch of 1, 5% of a batch of 8; one bank of 768 left units parallel on the client's tokens (refused).
BINS_PER_DIRECTION = 64
RANGE_MARGIN = 0.9  # plant at this share of the check's range bounds
OFFSET_CHANNELS = 16  # known-zero channels that carry the units' offsets past the current check
DECORRELATE_STEPS = 40  # growths of the decorrelating part before giving up
DECORRELATE_MARGIN = 100.0  # past the bound on the server's tokens, so that it holds on a client's
SAMPLE_TOKENS = 2048  # the server's tokens the decorrelation is measured on
SINK_SCALES = (0.5, 1.5)  # range of each unit's random sink-weight scale
STABLE_RANK_MARGIN = 1.5  # plant fc1 at this multiple of the check's stable-rank bound
MAX_SPREAD_STEPS = 40  # doublings of the zero-channel part before giving up on the stable rank


def silence_attention(block: nn.Module, knows_check: KnownCheck) -> None:
    """Attention adds nothing: its projection zeroed (plain imprint) or its values zeroed (past the check)."""
    if knows_check == "none":
        block.attn.proj.weight.zero_()
        block.attn.proj.bias.zero_()
        return
    dim = block.attn.proj.in_features
    block.attn.qkv.weight[2 * dim :].zero_()
    if block.attn.qkv.bias is not None:
        block.attn.qkv.bias[2 * dim :].zero_()
    block.attn.proj.bias.zero_()


def vary_sink_weights(fc2: nn.Linear, sink: int, generator: torch.Generator) -> None:
    """fc2's columns are no longer equal: each unit's sink weight scaled by its own random factor."""
    low, high = SINK_SCALES
    fc2.weight[sink] *= low + (high - low) * torch.rand(fc2.in_features, generator=generator)


def hide_rank_one(fc1: nn.Linear, zero: slice, generator: torch.Generator) -> None:
    """Raise fc1's stable rank past the bound of the original and the current check (by ``STABLE_RANK_MARGIN``)
    with zero-sum rows on the known-zero channels ``zero``."""
    from ..defences.model_check import MIN_STABLE_RANK, ORIGINAL_MIN_STABLE_RANK, stable_rank

    width = zero.stop - zero.start
    noise = torch.randn(fc1.out_features, width, generator=generator, dtype=torch.float64)
    noise -= noise.mean(1, keepdim=True)  # zero-sum: the known-zero channels are all -mu/sigma
    base = fc1.weight.detach().double().clone()
    scale = float(base.norm(dim=1).max()) / width**0.5
    for _ in range(MAX_SPREAD_STEPS):
        trial = base.clone()
        trial[:, zero] += scale * noise
        if stable_rank(trial) >= STABLE_RANK_MARGIN * max(MIN_STABLE_RANK, ORIGINAL_MIN_STABLE_RANK):
            fc1.weight.copy_(trial.to(fc1.weight.dtype))
            return
        scale *= 2
    raise RuntimeError("imprint: could not raise fc1's stable rank past the model check")


def offset_channels(zero: slice) -> slice:
    """The known-zero channels a server past the current check turns into constant offsets (the last ones)."""
    return slice(zero.stop - OFFSET_CHANNELS, zero.stop)


def random_part_channels(zero: slice, knows_check: KnownCheck) -> slice:
    """Where fc1's zero-sum random part may go: the known-zero channels that stay known-zero."""
    return zero if knows_check != "current" else slice(zero.start, zero.stop - OFFSET_CHANNELS)


def fit_ranges(block: nn.Module, index: int, zero: slice) -> None:
    """Every planted tensor of the block within the check's ranges.

    norm2's weight at its bound amplifies the tokens (once), and fc1's weights are scaled down to fit (same
    thresholds, softer steps). Biases as large as the thresholds need are out of range, so most of each unit's
    bias comes through norm2 instead: on the offset channels norm2's weight is 0 and its bias a constant, so
    every token reads that constant there and a unit's weights on them add its own offset."""
    from ..defences.model_check import range_bound

    prefix = f"blocks.{index}."
    norm2, fc1 = block.norm2, block.mlp.fc1
    offsets = offset_channels(zero)
    gain = RANGE_MARGIN * range_bound(prefix + "norm2.weight")
    if not bool((norm2.weight[: offsets.start] == gain).all()):
        norm2.weight.fill_(gain)
        fc1.weight /= gain
    weight_bound = RANGE_MARGIN * range_bound(prefix + "mlp.fc1.weight")
    shrink = min(1.0, weight_bound / float(fc1.weight.abs().max()))
    fc1.weight *= shrink
    wanted = fc1.bias * shrink + fc1.weight[:, offsets] @ norm2.bias[offsets]  # what each unit adds now
    constant = RANGE_MARGIN * range_bound(prefix + "norm2.bias")
    norm2.weight[offsets], norm2.bias[offsets] = 0.0, constant
    bias_bound = RANGE_MARGIN * range_bound(prefix + "mlp.fc1.bias")
    fc1.bias.copy_(wanted.clamp(-bias_bound, bias_bound))
    per_channel = (wanted - fc1.bias) / (constant * (offsets.stop - offsets.start))
    if float(per_channel.abs().max()) > weight_bound:
        raise RuntimeError("imprint: the thresholds need more offset than the check's ranges leave")
    fc1.weight[:, offsets] = per_channel[:, None]


def decorrelate(block: nn.Module, measured: Tensor, token_channels: int, generator: torch.Generator) -> None:
    """Give each fc1 unit its own random part on the token channels, the least (growing from 1e-6 of its row)
    that leaves no pair of units within ``DECORRELATE_MARGIN`` times the check's ``parallel_units`` bound on the
    server's tokens (``measured``: its LayerNorm-ed tokens at this block)."""
    from ..defences.model_check import PARALLEL, parallel_share

    fc1 = block.mlp.fc1
    tokens = measured[torch.randperm(len(measured), generator=generator)[:SAMPLE_TOKENS]]
    tokens = tokens * block.norm2.weight.double() + block.norm2.bias.double()
    base = fc1.weight.detach().double().clone()
    noise = torch.randn(fc1.out_features, token_channels, generator=generator, dtype=torch.float64)
    noise *= base[:, :token_channels].norm(dim=1, keepdim=True) / noise.norm(dim=1, keepdim=True)
    share = 1e-6
    for _ in range(DECORRELATE_STEPS):
        trial = base.clone()
        trial[:, :token_channels] += share * noise
        if parallel_share(tokens @ trial.T + fc1.bias.double(), DECORRELATE_MARGIN * PARALLEL) == 0:
            fc1.weight.copy_(trial.to(fc1.weight.dtype))
            return
        share *= 2 ** 0.5
    raise RuntimeError("imprint: could not decorrelate fc1's units past the model check")
