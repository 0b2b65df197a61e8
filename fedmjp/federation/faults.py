"""Client faults: injecting them on purpose (scenario ``faults``) and spotting bad replies."""

from __future__ import annotations

import random
import time

import torch

from ..scenario import Arm
from .workload import derive_seed


class InjectedFault(RuntimeError):
    """Raised by a client the scenario told to fail."""


def injected_fault(arm: Arm, partition_id: int, server_round: int) -> str | None:
    """The fault this client injects this round (None: behave), drawn from the seed."""
    faults = arm.faults
    if faults.fraction <= 0:
        return None
    rng = random.Random(derive_seed(arm.seed, "fault", server_round, partition_id))
    if rng.random() >= faults.fraction:
        return None
    return rng.choice(faults.kinds)


def before_training(kind: str | None, arm: Arm) -> None:
    if kind == "raise":
        raise InjectedFault("injected fault: the client raised")
    if kind == "slow":
        time.sleep(arm.faults.slow_seconds)


def corrupt(kind: str | None, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A NaN or wrongly shaped reply, for the kinds that corrupt what is sent."""
    if kind == "nan":
        return {name: torch.full_like(t, float("nan")) for name, t in tensors.items()}
    if kind == "shape":
        return {name: t.flatten()[:-1] for name, t in tensors.items()}
    return tensors


def reply_problem(tensors: dict[str, torch.Tensor], expected: dict[str, torch.Size]) -> str | None:
    """Why a reply cannot be aggregated (None: it can)."""
    if set(tensors) != set(expected):
        missing, extra = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
        return f"wrong parameters (missing {missing[:3]}, unexpected {extra[:3]})"
    for name, shape in expected.items():
        if tensors[name].shape != shape:
            return f"wrong shape for {name}: {tuple(tensors[name].shape)} instead of {tuple(shape)}"
        if not all_finite(tensors[name]):
            return f"non-finite values in {name}"
    return None


def all_finite(tensor: torch.Tensor) -> bool:
    """Whether every value is finite, from the extremes alone (a NaN propagates to both): one pass without a
    mask the size of the tensor (5.5 million values, ViT-Ti/4's size: 0.4 ms against 5.8 ms)."""
    if tensor.numel() == 0 or not tensor.is_floating_point():
        return True
    low, high = torch.aminmax(tensor)
    return bool(torch.isfinite(low) and torch.isfinite(high))
