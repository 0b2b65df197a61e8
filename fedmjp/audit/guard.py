"""The client-side guard: before its update leaves, the client attacks it itself.

The client knows everything (weights, its update, its batch), so it is the strongest
auditor. Above ``max_psnr`` it withholds the update or adds Gaussian noise to it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..attacks import build_attack
from ..scenario import Arm
from ..train import LocalSettings
from .adversary import observation, run_attack
from .receipt import score

@dataclass
class Verdict:
    action: str
    psnr: float | None
    seconds: float
    reason: str = ""


def inspect(arm: Arm, weights: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor], truth: torch.Tensor,
            labels: torch.Tensor, shuffled: torch.Tensor | None, patch: int, server_round: int,
            settings: LocalSettings | None) -> Verdict:
    """Attack our own update with the guard's attack and decide what may leave (``settings``: how we trained,
    as the reply reports it)."""
    guard = arm.guard
    outcome = run_attack(guard.attack, build_attack(guard.attack.name, **guard.attack.options),
                         observation(arm, weights, tensors, len(truth), server_round, settings))
    if outcome.status != "attacked":
        return Verdict("pass", None, 0.0, f"{guard.attack.name} {outcome.status}: {outcome.reason}")
    rec = outcome.reconstruction
    psnr = score(rec.images, truth, patch, shuffled, labels, rec.labels)["psnr"]
    action = "pass" if psnr <= guard.max_psnr else guard.action
    return Verdict(action, psnr, rec.seconds)


def add_noise(tensors: dict[str, torch.Tensor], scale: float, seed: int) -> dict[str, torch.Tensor]:
    """Gaussian noise with std ``scale`` times each tensor's RMS."""
    generator = torch.Generator().manual_seed(seed)
    noised = {}
    for name, t in tensors.items():
        rms = t.float().pow(2).mean().sqrt()
        noised[name] = t + scale * rms * torch.randn(t.shape, generator=generator, dtype=t.dtype)
    return noised
