"""Gradient inversion attacks: one interface, closed-form, optimisation and adaptive attacks."""

from . import adaptive, april, imprint, optimization, trap  # noqa: F401  (each registers its attacks)
from .base import (
    Attack,
    NotApplicable,
    Observation,
    PlantingAttack,
    Reconstruction,
    ThreatModel,
    attack_names,
    build_attack,
    plants,
    rebuild_model,
    register_attack,
)

__all__ = [
    "Attack",
    "NotApplicable",
    "Observation",
    "PlantingAttack",
    "Reconstruction",
    "ThreatModel",
    "attack_names",
    "build_attack",
    "plants",
    "rebuild_model",
    "register_attack",
]
