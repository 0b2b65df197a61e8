"""Gradient inversion attacks: one interface, closed-form, optimisation and adaptive attacks."""

from . import april  # noqa: F401  (registers the attack)
from .base import (
    Attack,
    NotApplicable,
    Observation,
    Reconstruction,
    ThreatModel,
    attack_names,
    build_attack,
    rebuild_model,
    register_attack,
)

__all__ = [
    "Attack",
    "NotApplicable",
    "Observation",
    "Reconstruction",
    "ThreatModel",
    "attack_names",
    "build_attack",
    "rebuild_model",
    "register_attack",
]
