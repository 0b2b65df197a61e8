"""What SecAgg+'s fixed-point arithmetic costs a round: the bound on the aggregate's error, and the precision
of one client's reply (how much of it the clipping range saturates, how coarse the step is against it).

Flower's SecAgg+ scales each reply by r = round(n / max_weight x Q) / Q (n its example count, Q the
quantization range), clips it to [-c, c] (c the clipping range), rounds it stochastically to a step of 2c / Q,
sums the masked integers and divides by the sum of the r. Without saturation each client adds less than one
step of error, so the aggregate is within K x step / sum(r) of the mean weighted by the r; the r differ from
the example counts by their rounding, which adds at most (c / min r) x sum |r_i / sum r - n_i / sum n|
(|x| <= c / r for a value that is not clipped) to the distance from the plain example-weighted mean.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..scenario import SecureAggregation

# A reply whose RMS is within this many quantization steps gets a warning: its rounding noise is then at
# least a few per cent of the signal (a FedSGD gradient of one example under Flower's defaults is about one).
COARSE_STEPS = 100.0
SATURATED = "secagg.saturated"  # reply metric: share of the scaled values at the clipping range
STEPS_PER_RMS = "secagg.steps-per-rms"  # reply metric: the scaled reply's RMS in quantization steps


def weight_ratio(settings: SecureAggregation, num_examples: int) -> float:
    """The factor Flower's client scales its reply by (its weight, quantized)."""
    return round(num_examples / settings.max_weight * settings.quantization_range) / settings.quantization_range


def quantization_bound(settings: SecureAggregation, counts: Sequence[int]) -> float:
    """The largest difference between the SecAgg+ aggregate and the plain example-weighted mean of the same
    replies, for any value no client saturated."""
    ratios = np.array([weight_ratio(settings, n) for n in counts])
    examples = np.asarray(counts, dtype=float)
    rounding = len(counts) * settings.step / ratios.sum()
    weighting = settings.clipping_range / ratios.min() * np.abs(ratios / ratios.sum() - examples / examples.sum()).sum()
    return float(rounding + weighting)


def reply_precision(settings: SecureAggregation, arrays: Sequence[np.ndarray], num_examples: int
                    ) -> dict[str, float]:
    """One client's reply as SecAgg+ will quantize it: the share of its scaled values that the clipping range
    saturates, and the scaled reply's RMS in quantization steps."""
    ratio = weight_ratio(settings, num_examples)
    # Array by array, unscaled: no float64 copy of the whole reply on the client's round.
    size = sum(a.size for a in arrays)
    at_clip = sum(int(np.count_nonzero(np.abs(a) * ratio >= settings.clipping_range)) for a in arrays)
    squares = sum(float(np.square(a, dtype=np.float64).sum()) for a in arrays)
    rms = ratio * (squares / size) ** 0.5 if size else 0.0
    return {SATURATED: at_clip / size if size else 0.0, STEPS_PER_RMS: rms / settings.step}


def precision_warnings(reports: Sequence[tuple[int, dict[str, float]]]) -> list[str]:
    """One line per client whose reply the settings clip or quantize coarsely ((partition id, its metrics))."""
    lines = []
    for partition_id, metrics in reports:
        if metrics.get(SATURATED, 0.0) > 0:
            lines.append(f"partition {partition_id}: {metrics[SATURATED]:.2%} of the scaled reply saturates the "
                         f"clipping range (raise training.secure_aggregation.clipping_range)")
        if metrics.get(STEPS_PER_RMS, float("inf")) < COARSE_STEPS:
            lines.append(f"partition {partition_id}: the scaled reply's RMS is {metrics[STEPS_PER_RMS]:.3g} "
                         f"quantization steps (coarse: raise quantization_range or lower clipping_range)")
    return lines
