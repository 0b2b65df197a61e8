"""The server's attacks on one client reply (no Flower, no client data): the honest-but-curious ones on
the weights it sent everyone, and, in a dishonest round, the planting attack on the weights it planted."""

from __future__ import annotations

import traceback
from collections.abc import Mapping
from dataclasses import dataclass

from functools import cached_property
from typing import Literal

import timm
import torch

from ..attacks import Attack, NotApplicable, Observation, PlantingAttack, Reconstruction, build_attack
from ..attacks.imprint import server_images
from ..scenario import Arm, AttackSpec, SecureAggregation
from ..federation.train import compute_gradient, reply_kind, seed_jigsaw
from ..protocol import LocalSettings

OutcomeStatus = Literal["attacked", "not-applicable", "failed"]
# A planting server under SecAgg+ clips at this many times the largest gradient its own images give the tensors
# it reads (the clients' images are not its own), measured on this many batches of them. Imprint through the
# arithmetic at 4 clients x 4 CIFAR-10 images, 5 batches (bench.secure_aggregation): 0.913 of the patches at 1x
# (clipped), 0.932 at 1.5x, 0.927 at 2x, 0.926 at 3x, 0.907 at 4x (coarser); 0.943 from the plain mean.
CLIP_MARGIN = 2.0
OWN_BATCHES = 4


@dataclass
class Outcome:
    spec: AttackSpec
    status: OutcomeStatus
    reconstruction: Reconstruction | None = None
    reason: str = ""


def observation(arm: Arm, weights: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor],
                num_examples: int, server_round: int, settings: LocalSettings | None = None) -> Observation:
    """What the server knows: its weights, the reply, and how the client trained.

    ``settings`` are what the client reported in its reply's metrics (``LocalSettings.from_metrics``):
    the batch size it really used, its steps, optimizer, learning rate and momentum. Without them the
    server falls back on the config it sent for ``server_round`` (the round's lr under a schedule), which a
    client with few examples does not follow exactly.
    """
    t = arm.training
    fedsgd = t.mode == "fedsgd"
    if settings is None:
        batch = num_examples if fedsgd else min(t.batch_size, num_examples)
        settings = LocalSettings(batch_size=batch, steps=1 if fedsgd else max(1, num_examples // batch),
                                 epochs=0 if fedsgd else t.local_epochs, optimizer=t.optimizer,
                                 lr=t.lr_at(server_round), momentum=t.momentum if t.optimizer == "sgd" else 0.0)
        reported = False
    else:
        reported = True
    return Observation(
        model_name=arm.model.name,
        weights=weights,
        tensors=tensors,
        kind=reply_kind(t.mode),
        num_examples=num_examples,
        model_kwargs=arm.model.create_kwargs(),
        local_lr=None if fedsgd else settings.lr,
        local_steps=1 if fedsgd else settings.steps,
        local_batch_size=num_examples if fedsgd else settings.batch_size,
        local_optimizer=None if fedsgd else settings.optimizer,
        local_momentum=None if fedsgd else settings.momentum,
        local_reported=reported,
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
        server = arm.audit.server
        self.planting: tuple[AttackSpec, PlantingAttack] | None = None
        if server.kind != "honest":
            self.planting = (AttackSpec(name=server.kind, options=server.attack_options()),
                             build_attack(server.kind, seed=arm.seed, **server.attack_options()))

    @cached_property
    def own_images(self) -> torch.Tensor:
        """The dishonest server's own images (audit.server.images), at the model's input size."""
        spec = self.arm.audit.server.images
        with torch.device("meta"):
            size = timm.create_model(self.arm.model.name, **self.arm.model.create_kwargs()).patch_embed.img_size[0]
        return server_images(size, spec.count, source=spec.source, root=spec.root, seed=self.arm.seed)

    def plant(self, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The weights a target of a dishonest round gets instead of the global ones."""
        assert self.planting is not None, "plant() on an honest server"
        return self.planting[1].plant(self.arm.model.name, weights, self.own_images, self.arm.model.create_kwargs())

    def tuned_secure_aggregation(self, weights: dict[str, torch.Tensor], settings: SecureAggregation, clients: int,
                                 server_round: int) -> SecureAggregation:
        """The SecAgg+ settings a planting server sets for a round it planted ``weights`` in (the server sets them
        every round): each reply unscaled (max_weight at the batch size), the finest quantization the modulus
        leaves for ``clients`` replies, and a clipping range of CLIP_MARGIN x the largest gradient its own images
        give the tensors its decoding reads (the rest of the reply saturates; the decoding does not need it)."""
        assert self.planting is not None, "tuned_secure_aggregation() on an honest server"
        arm, batch = self.arm, self.arm.training.batch_size
        model = timm.create_model(arm.model.name, **arm.model.create_kwargs())
        model.load_state_dict(weights)
        read = self.planting[1].reads(arm.model.name, weights, arm.model.create_kwargs())
        # Its own images carry no labels: any label gives a gradient of the same scale.
        generator = torch.Generator().manual_seed(arm.seed)
        largest = 0.0
        for images in self.own_images[: OWN_BATCHES * batch].split(batch):
            seed_jigsaw(model, len(images))
            labels = torch.randint(model.num_classes, (len(images),), generator=generator)
            grads = compute_gradient(model, images, labels).tensors
            largest = max([largest, *(float(grads[name].abs().max()) for name in read)])
        if arm.training.mode == "fedavg":
            largest *= arm.training.lr_at(server_round)  # one plain SGD step is the gradient times the lr
        levels = 1 << (((settings.modulus_range - 1) // clients).bit_length() - 1)  # clients x levels < modulus
        return settings.model_copy(update={"max_weight": float(batch), "quantization_range": levels,
                                           "clipping_range": CLIP_MARGIN * largest or settings.clipping_range})

    def run_planted(self, obs: Observation) -> list[Outcome]:
        """The planting attack on a reply to planted weights (``obs.weights``: what that client got)."""
        assert self.planting is not None, "run_planted() on an honest server"
        return [run_attack(*self.planting, obs)]

    def observation(self, weights: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor],
                    num_examples: int, server_round: int, metrics: Mapping[str, float] | None = None
                    ) -> Observation:
        """``metrics``: the reply's metrics, which carry the client's real local settings."""
        settings = LocalSettings.from_metrics(metrics) if metrics is not None else None
        return observation(self.arm, weights, tensors, num_examples, server_round, settings)

    def run(self, obs: Observation) -> list[Outcome]:
        return [run_attack(spec, attack, obs) for spec, attack in self.attacks]
