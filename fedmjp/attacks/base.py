"""One interface for every gradient-inversion attack.

An attack gets only what an honest-but-curious server has (``Observation``: the global
weights it sent, the architecture, one client's gradient or update keyed by parameter name,
the number of examples and, when known, the local hyper-parameters) and returns a
``Reconstruction``. Attacks never import Flower and never see client data.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

import timm
import torch
from torch import nn

from ..catalog import check_attack
from .. import models  # noqa: F401  (registers fedmjp's models with timm: rebuild_model creates them by name)
from ..federation.train import ReplyKind

POS_EMBED = "pos_embed"
PATCH_WEIGHT = "patch_embed.proj.weight"


def patch_offset(model: nn.Module) -> int:
    """Rows of the position embedding before the patches' (prefix tokens' own, unless no_embed_class)."""
    return 0 if getattr(model, "no_embed_class", False) else model.num_prefix_tokens


def patch_rows(model: nn.Module, grad_pos: torch.Tensor) -> torch.Tensor:
    """(n, d) rows of a position-embedding gradient that belong to the patch positions."""
    return grad_pos.reshape(-1, grad_pos.shape[-1])[patch_offset(model) :]


@dataclass
class Observation:
    """What the server sent and what one client replied."""

    model_name: str
    weights: dict[str, torch.Tensor]
    tensors: dict[str, torch.Tensor]
    kind: ReplyKind = "gradient"
    num_examples: int = 1
    # Architecture arguments beyond the registered defaults (depth, num_classes, ...).
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    # Local training, when the server knows it (FedAvg replay needs it).
    local_lr: float | None = None
    local_steps: int | None = None
    local_batch_size: int | None = None
    local_optimizer: str | None = None
    local_momentum: float | None = None
    # True when the settings above are what the client reported it did, not what the server configured.
    local_reported: bool = False
    # Labels only when a threat model grants them (never by default).
    labels: torch.Tensor | None = None


@dataclass
class ThreatModel:
    """What the attacker knew: recorded with every result."""

    architecture: str
    weights: bool = True
    labels: Literal["recovered", "given", "none"] = "recovered"
    local_hyperparameters: bool = False
    # Where the local settings came from: "reported" by the client's reply, or "configured" by the server.
    local_settings_source: Literal["reported", "configured", "none"] = "none"
    num_examples: bool = True
    assumes_mjp: bool = False
    # "malicious": the server chose the weights it sent (a planting attack), not the global model.
    server: Literal["honest", "malicious"] = "honest"
    # A planting attack reads each patch "exact", or only its "projection" onto the server's principal
    # directions where a patch has more values than the embedding has spare channels.
    patch_read: Literal["exact", "projection"] | None = None
    # A planting server that knew the client's model check and planted past it: "original" or "current".
    knows_check: Literal["original", "current"] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Reconstruction:
    """An attack's output. Images are (B, 3, H, W) in [0, 1]."""

    images: torch.Tensor
    threat_model: ThreatModel
    seconds: float = 0.0
    labels: torch.Tensor | None = None
    # (B, N) patch index of the true position of each reconstructed position, when recovered.
    positions: torch.Tensor | None = None
    # (N,) positions the attacker found shuffled (adaptive attacker).
    shuffled: torch.Tensor | None = None
    # The attack's data-free starting point (the baseline a leakage score is relative to).
    start: torch.Tensor | None = None
    # Patch-reading attacks (imprint): (M, 3*P*P) recovered patches in [0, 1] and (M,) the position each
    # was recovered at (-1 where unknown), scored by ``batch_metrics.patch_recovery``.
    patches: torch.Tensor | None = None
    patch_positions: torch.Tensor | None = None
    info: dict[str, Any] = field(default_factory=dict)


class NotApplicable(ValueError):
    """The attack cannot run on this observation (e.g. closed form with batch size > 1)."""


class Attack(Protocol):
    name: str

    def __call__(self, obs: Observation) -> Reconstruction: ...


class PlantingAttack(Attack, Protocol):
    """An attack of a dishonest server: it first chooses the weights a client gets, then decodes the reply.

    ``plant`` takes the global weights and the server's own images (never a client's) and returns the weights
    to send, same names and shapes; the reply's ``Observation.weights`` are those planted weights.
    """

    def plant(self, model_name: str, weights: dict[str, torch.Tensor], images: torch.Tensor,
              model_kwargs: dict[str, Any] | None = None) -> dict[str, torch.Tensor]: ...

    def reads(self, model_name: str, weights: dict[str, torch.Tensor], model_kwargs: dict[str, Any]) -> list[str]:
        """The reply's tensors the decoding reads, for planted ``weights``."""
        ...


def plants(attack: Attack) -> bool:
    """Whether an attack has a planting step (honest-but-curious attacks do not)."""
    return callable(getattr(attack, "plant", None))


_ATTACKS: dict[str, Callable[..., Attack]] = {}


def register_attack(name: str) -> Callable[[Callable[..., Attack]], Callable[..., Attack]]:
    def wrap(factory: Callable[..., Attack]) -> Callable[..., Attack]:
        _ATTACKS[name] = factory
        return factory

    return wrap


def attack_names() -> list[str]:
    return sorted(_ATTACKS)


def build_attack(name: str, **options: Any) -> Attack:
    """An attack by name with its options (e.g. ``steps``, ``restarts``), checked against ``fedmjp.catalog``:
    ValueError naming an unknown attack or option (``attack.options.KEY``)."""
    check_attack(name, options)
    return _ATTACKS[name](**options)


def rebuild_model(obs: Observation) -> nn.Module:
    """The attacker's copy of the global model: same architecture and weights, eval mode.

    Fused attention is switched off on this copy because optimisation attacks differentiate
    through it twice. Eval mode means no jigsaw shuffle: the attacker does not know the draw.
    """
    model = timm.create_model(obs.model_name, **obs.model_kwargs)
    model.load_state_dict(obs.weights, strict=True)
    for module in model.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = False
    return model.eval()


class Timer:
    """Wall time of an attack (``with Timer() as t: ...; t.seconds``)."""

    def __enter__(self) -> Timer:
        self._start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._start
