"""The client's check of the weights it received: planted structure, from the weights alone and against
the global weights it last accepted.

A planting attack (imprint bins, trap weights) leaves marks no honest training produces: an MLP whose fc1
rows are all one direction (stable rank 1, where honest ViT blocks measure 74 to 89 at init and after
training), fc2 columns that are all equal, an attention projection that is exactly zero, and tensors whose
RMS jumps by orders of magnitude between rounds. Any one of them refuses the model. A planting made to look
honest is open research: this check catches the published constructions, not every possible one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["REFUSAL", "Finding", "check_weights"]

# How a refusal begins: the client's error reason, and so the server's fault record and the audit summary.
REFUSAL = "refused by client model check"

MIN_STABLE_RANK = 5.0  # an fc1 of a binning bank is 1.0; honest ViT blocks are far above
EQUAL_COLUMNS = 1e-3  # spread of fc2's columns around their mean, relative to fc2's norm
MAX_NORM_RATIO = 100.0  # a tensor's RMS against the last accepted one, either way
RMS_FLOOR = 0.01  # added to both RMS values: a tensor initialised near zero (cls_token, biases) may grow

_FC1 = re.compile(r"(.*)\.mlp\.fc1\.weight$")
_FC2 = re.compile(r"(.*)\.mlp\.fc2\.weight$")
_ATTN_PROJ = re.compile(r"(.*)\.attn\.proj\.weight$")


@dataclass(frozen=True)
class Finding:
    """One test that fired: which, on which tensor, the value measured and the bound it crossed."""

    test: str
    tensor: str
    value: float
    bound: float

    def __str__(self) -> str:
        return f"{self.test} on {self.tensor}: {self.value:.3g} (bound {self.bound:g})"


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


def check_weights(weights: dict[str, Tensor], accepted: dict[str, Tensor] | None = None) -> list[Finding]:
    """Every test that fires on ``weights`` (empty: the model looks honest).

    ``accepted`` are the global weights this client last trained on (None on its first round).
    """
    findings: list[Finding] = []
    for name, value in weights.items():
        if _FC1.match(name) and (rank := stable_rank(value)) < MIN_STABLE_RANK:
            findings.append(Finding("fc1_stable_rank", name, rank, MIN_STABLE_RANK))
        if _FC2.match(name) and (spread := column_spread(value)) < EQUAL_COLUMNS:
            findings.append(Finding("fc2_equal_columns", name, spread, EQUAL_COLUMNS))
        if _ATTN_PROJ.match(name) and not bool(value.any()):
            findings.append(Finding("attention_zero", name, 0.0, 0.0))
        if accepted is not None and name in accepted:
            ratio = _rms_ratio(value, accepted[name])
            if not 1 / MAX_NORM_RATIO <= ratio <= MAX_NORM_RATIO:
                findings.append(Finding("norm_jump", name, ratio, MAX_NORM_RATIO))
    return findings


def _rms_ratio(new: Tensor, old: Tensor) -> float:
    """(RMS(new) + floor) / (RMS(old) + floor): orders of magnitude, not the growth of a near-zero init."""
    def rms(t: Tensor) -> float:
        return float(t.detach().double().pow(2).mean().sqrt()) if t.numel() else 0.0

    return (rms(new) + RMS_FLOOR) / (rms(old) + RMS_FLOOR)
