"""Accuracy over seeds: Student's t interval of the mean and a paired t-test against the reference.

Seeds pair the arms: for a given seed every arm sees the same split and initial weights, so the
difference of two arms on one seed is one observation of the defence's cost, and the test is paired.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
ALPHA = 1 - CONFIDENCE
REFERENCE_READING = "reference"
TOO_FEW = "too few seeds for a test ({n})"
NO_DIFFERENCE = "no significant difference at {n} seeds"
LOWER = "lower than ViT (p < {alpha:g}, {n} seeds)"
HIGHER = "higher than ViT (p < {alpha:g}, {n} seeds)"


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float | None, float | None]:
    """(mean, low, high): the Student's t interval of the mean; no interval from fewer than 2 values."""
    data = np.asarray(values, dtype=float)
    mean = float(data.mean())
    if len(data) < 2:
        return mean, None, None
    sem = float(stats.sem(data))
    if sem == 0.0:  # every seed gave the same number: the interval is that number
        return mean, mean, mean
    low, high = stats.t.interval(confidence, len(data) - 1, loc=mean, scale=sem)
    return mean, float(low), float(high)


def paired_p(values: Sequence[float], reference: Sequence[float]) -> float | None:
    """Two-sided p-value of the paired t-test (same seeds, same order); None from fewer than 2 pairs."""
    a, b = np.asarray(values, dtype=float), np.asarray(reference, dtype=float)
    if len(a) != len(b):
        raise ValueError(f"paired test: {len(a)} values against {len(b)} reference values")
    if len(a) < 2:
        return None
    diffs = a - b
    if np.all(diffs == diffs[0]):
        # No spread in the differences: t is 0/0 (identical arms, p = 1) or infinite (p = 0).
        return 1.0 if diffs[0] == 0 else 0.0
    p = float(stats.ttest_rel(a, b).pvalue)
    return p if math.isfinite(p) else None


def reading(values: Sequence[float], reference: Sequence[float], is_reference: bool, alpha: float = ALPHA) -> str:
    """The words of an arm's row, generated from the paired test: the rule the table's caption states."""
    if is_reference:
        return REFERENCE_READING
    n = len(values)
    p = paired_p(values, reference)
    if p is None:
        return TOO_FEW.format(n=n)
    if p >= alpha:
        return NO_DIFFERENCE.format(n=n)
    lower = float(np.mean(values)) < float(np.mean(reference))
    return (LOWER if lower else HIGHER).format(alpha=alpha, n=n)


def curve_band(series: list[list[tuple[int, float]]]) -> tuple[list[int], list[float], list[float], list[float]]:
    """Rounds, mean and the 95% t band over seeds at every round all seeds reached (no band from one seed)."""
    common = sorted(set.intersection(*(set(r for r, _ in s) for s in series))) if series else []
    means, lows, highs = [], [], []
    for rnd in common:
        mean, low, high = t_interval([dict(s)[rnd] for s in series])
        means.append(mean)
        lows.append(mean if low is None else low)
        highs.append(mean if high is None else high)
    return common, means, lows, highs
