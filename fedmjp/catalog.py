"""What a scenario may name, known without importing torch: fedmjp's models and every attack's options.

Validating a scenario (the CLI, ``validate``, a ServerApp's first look) must not pay for torch and timm. The
models fedmjp registers with timm and the options each attack's factory takes are listed here; tests compare
both lists with the registries they describe (``fedmjp.models``, ``fedmjp.attacks``), so they cannot drift.
A model name outside this list is looked up in timm itself.
"""

from __future__ import annotations

import difflib
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

# fedmjp's timm registrations (fedmjp.models.registry) and the classes of each one's default config.
OWN_MODELS: dict[str, int] = {
    "vit_tiny_patch4_32": 10,
    "vit_small_patch4_32": 10,
    "mjp_vit_tiny_patch4_32": 10,
    "mjp_vit_small_patch4_32": 10,
    "mjp_vit_tiny_patch16_224": 1000,
    "mjp_vit_small_patch16_224": 1000,
    "mjp_vit_base_patch16_224": 1000,
    "mjp_deit_small_patch16_224": 1000,
}


def did_you_mean(name: str, choices: list[str]) -> str:
    """`` (did you mean 'X'?)`` for the closest choice, or nothing when none is close."""
    close = difflib.get_close_matches(name, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def known_model(name: str) -> bool:
    """Whether timm can build this name once fedmjp's models are registered (timm is imported only for a
    name that is not fedmjp's own)."""
    if name in OWN_MODELS:
        return True
    import timm  # here: timm imports torch

    return timm.is_model(name)


def model_classes(name: str) -> int | None:
    """Outputs of a model's classifier head by default (None when its registration does not say)."""
    if name in OWN_MODELS:
        return OWN_MODELS[name]
    import timm

    cfg = timm.models.get_pretrained_cfg(name)
    return cfg.num_classes if cfg else None


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Budget(_Options):
    """An optimisation attack's budget (``fedmjp.attacks.gradient_matching.Budget``); unset keeps the
    attack's own default."""

    steps: Annotated[int, Field(ge=0)] | None = None
    restarts: Annotated[int, Field(ge=1)] | None = None
    lr: Annotated[float, Field(gt=0)] | None = None
    tv: Annotated[float, Field(ge=0)] | None = None
    patch_prior: Annotated[float, Field(ge=0)] | None = None
    optimizer: Literal["adam", "lbfgs"] | None = None
    signed: bool | None = None
    seed: int | None = None
    log_every: Annotated[int, Field(ge=1)] | None = None


class LayerWeighted(Budget):
    # Weight of each parameter's gradient in the matching distance, by parameter name (unnamed: 1).
    layer_weights: dict[str, float] | None = None


class IGOptions(LayerWeighted):
    centred_pos: float | None = None


class AprilOptOptions(IGOptions):
    pos_weight: float | None = None


class AdaptiveOptions(LayerWeighted):
    rounds: Annotated[int, Field(ge=0)] | None = None


class ImprintOptions(Budget):
    """The budget is accepted and ignored: imprint reads the reply once."""

    knows_check: Literal["none", "original", "current"] | None = None


class TrapOptions(Budget):
    """The budget is accepted and ignored: trap reads the reply once."""

    blocks: Annotated[int, Field(ge=1)] | None = None
    batch: Annotated[int, Field(ge=1)] | None = None


# Every attack ``fedmjp.attacks.build_attack`` knows, with the options its factory takes. APRIL's closed form
# accepts the budget and ignores it (a sweep may pass one budget to every attack).
ATTACK_OPTIONS: dict[str, type[_Options]] = {
    "adaptive": AdaptiveOptions,
    "april": Budget,
    "april-opt": AprilOptOptions,
    "dlg": Budget,
    "ig": IGOptions,
    "imprint": ImprintOptions,
    "trap": TrapOptions,
}


def attack_names() -> list[str]:
    return sorted(ATTACK_OPTIONS)


def check_attack(name: str, options: dict[str, Any], where: str = "attack") -> None:
    """Refuse an unknown attack, or an option its factory does not take or of the wrong type, in one line that
    names the field (``WHERE.options.KEY``); raises ValueError."""
    if name not in ATTACK_OPTIONS:
        raise ValueError(f"{where}.name: unknown attack {name!r}{did_you_mean(name, attack_names())} "
                         f"(choose from {', '.join(attack_names())})")
    schema = ATTACK_OPTIONS[name]
    try:
        schema.model_validate(options)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(part) for part in error["loc"])
        if error["type"] == "extra_forbidden":
            hint = did_you_mean(str(error["loc"][0]), list(schema.model_fields))
            raise ValueError(f"{where}.options.{key}: {name} takes no option {key!r}{hint} "
                             f"(it takes {', '.join(schema.model_fields)})") from None
        raise ValueError(f"{where}.options.{key}: {error['msg']}") from None
