"""The honest-but-curious server's attacks on one client reply (no Flower, no client data)."""

from __future__ import annotations

import traceback
from dataclasses import dataclass

import torch

from ..attacks import Attack, NotApplicable, Observation, Reconstruction, build_attack
from ..scenario import Arm, AttackSpec
from ..train import reply_kind


@dataclass
class Outcome:
    spec: AttackSpec
    status: str  # "attacked", "not-applicable" or "failed"
    reconstruction: Reconstruction | None = None
    reason: str = ""


def observation(arm: Arm, weights: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor],
                num_examples: int) -> Observation:
    """What the server knows: its weights, the reply, and the training config it sent."""
    t = arm.training
    fedsgd = t.mode == "fedsgd"
    return Observation(
        model_name=arm.model.name,
        weights=weights,
        tensors=tensors,
        kind=reply_kind(t.mode),
        num_examples=num_examples,
        model_kwargs=arm.model.create_kwargs(),
        local_lr=None if fedsgd else t.lr,
        local_steps=1 if fedsgd else max(1, num_examples // t.batch_size),
        local_batch_size=num_examples if fedsgd else t.batch_size,
        local_optimizer=None if fedsgd else t.optimizer,
    )


def run_attack(spec: AttackSpec, attack: Attack, obs: Observation) -> Outcome:
    try:
        return Outcome(spec, "attacked", attack(obs))
    except NotApplicable as exc:
        return Outcome(spec, "not-applicable", reason=str(exc))
    except Exception as exc:  # an attack bug must not stop the federation; it is recorded
        return Outcome(spec, "failed", reason=traceback.format_exception_only(exc)[-1].strip())


class Adversary:
    """Runs the arm's attacks on what the server received, knowing what it sent."""

    def __init__(self, arm: Arm) -> None:
        self.arm = arm
        self.attacks = [(spec, build_attack(spec.name, **spec.options)) for spec in arm.audit.attacks]

    def observation(self, weights: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor],
                    num_examples: int) -> Observation:
        return observation(self.arm, weights, tensors, num_examples)

    def run(self, obs: Observation) -> list[Outcome]:
        return [run_attack(spec, attack, obs) for spec, attack in self.attacks]
