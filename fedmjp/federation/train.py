"""Local training: one FedSGD gradient, a FedAvg update, centralised epochs, and evaluation.

Everything here speaks images in [0, 1]; normalisation to the model's input happens inside.
Gradients and updates are keyed by parameter name (never by position), on the CPU, float32.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..models import Jigsaw, to_model_input
# How a client trained travels in its reply: the protocol defines it.
from ..protocol import LocalSettings

Batch = tuple[torch.Tensor, torch.Tensor]


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, the CPU otherwise; an explicit CUDA must exist."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {spec!r} requested but no CUDA device is available")
    return device


def seed_jigsaw(model: nn.Module, seed: int) -> None:
    """Make the model's jigsaw draws repeatable (no-op for models without MJP)."""
    if hasattr(model, "jigsaw_generator"):
        model.jigsaw_generator = torch.Generator().manual_seed(seed)


@dataclass
class LossTerms:
    total: torch.Tensor
    ce: torch.Tensor
    dal: torch.Tensor
    jigsaw: Jigsaw | None


def loss_terms(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> LossTerms:
    """Classification loss plus the MJP DAL loss of this forward pass (0 for plain ViTs)."""
    logits = model(to_model_input(model, images))
    ce = F.cross_entropy(logits, labels)
    dal = model.dal_loss() if hasattr(model, "dal_loss") else ce.new_zeros(())
    return LossTerms(ce + dal, ce, dal, getattr(model, "jigsaw", None))


def trainable(model: nn.Module) -> dict[str, nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


# What a client replies: a gradient (FedSGD) or the change of its weights after local training (FedAvg).
ReplyKind = Literal["gradient", "update"]


def reply_kind(mode: str) -> ReplyKind:
    """The reply of a training mode: ``fedsgd`` sends a gradient, ``fedavg`` an update."""
    return "gradient" if mode == "fedsgd" else "update"


def step_sign(kind: ReplyKind) -> float:
    """+1 when the reply is a step in weight space (an update), -1 when it points uphill (a gradient)."""
    return 1.0 if kind == "update" else -1.0


@dataclass
class LocalResult:
    """What a client computed: a gradient (FedSGD) or an update (FedAvg), by parameter name."""

    kind: ReplyKind
    tensors: dict[str, torch.Tensor]
    num_examples: int
    loss: float
    ce_loss: float
    dal_loss: float
    # The jigsaw draw of every local step (None: that step was not shuffled).
    jigsaws: list[Jigsaw | None] = field(default_factory=list)
    # What the client really did (reported in the reply's metrics).
    settings: LocalSettings | None = None

    @property
    def shuffled_steps(self) -> list[bool]:
        return [j is not None for j in self.jigsaws]


def compute_gradient(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> LocalResult:
    """FedSGD: the gradient of one batch, without touching the weights."""
    device = next(model.parameters()).device
    model.train()
    params = trainable(model)
    terms = loss_terms(model, images.to(device), labels.to(device))
    grads = torch.autograd.grad(terms.total, list(params.values()), allow_unused=True)
    tensors = {
        name: (g if g is not None else torch.zeros_like(p)).detach().float().cpu()
        for (name, p), g in zip(params.items(), grads)
    }
    return LocalResult(
        "gradient", tensors, len(labels), terms.total.item(), terms.ce.item(), terms.dal.item(), [terms.jigsaw],
        LocalSettings(batch_size=len(labels), steps=1, epochs=0),
    )


def make_optimizer(params: Iterable[nn.Parameter], name: str, lr: float, momentum: float = 0.0,
                   weight_decay: float = 0.0) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"optimizer: unknown optimizer {name!r} (sgd, adam, adamw)")


def local_update(
    model: nn.Module,
    batches: Iterable[Batch],
    lr: float,
    optimizer: str = "sgd",
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    epochs: int = 1,
) -> LocalResult:
    """FedAvg: train on ``batches`` (one step each) and return new minus old weights.

    ``epochs`` is only reported (the caller chose the batches). The model is left at the trained weights.
    """
    device = next(model.parameters()).device
    model.train()
    params = trainable(model)
    before = {name: p.detach().clone() for name, p in params.items()}
    opt = make_optimizer(params.values(), optimizer, lr, momentum, weight_decay)
    totals = torch.zeros(3)
    examples = 0
    jigsaws: list[Jigsaw | None] = []
    largest = 0
    for images, labels in batches:
        largest = max(largest, len(labels))
        terms = loss_terms(model, images.to(device), labels.to(device))
        opt.zero_grad(set_to_none=True)
        terms.total.backward()
        opt.step()
        totals += torch.tensor([terms.total.item(), terms.ce.item(), terms.dal.item()]) * len(labels)
        examples += len(labels)
        jigsaws.append(terms.jigsaw)
    if examples == 0:
        raise ValueError("local_update: no batches to train on")
    tensors = {name: (p.detach() - before[name]).float().cpu() for name, p in params.items()}
    mean = totals / examples
    settings = LocalSettings(largest, len(jigsaws), epochs, optimizer, lr, momentum if optimizer == "sgd" else 0.0,
                             weight_decay)
    return LocalResult("update", tensors, examples, *mean.tolist(), jigsaws=jigsaws, settings=settings)


def train_epochs(model: nn.Module, loader: Iterable[Batch], epochs: int, lr: float,
                 optimizer: str = "adamw", weight_decay: float = 0.05) -> list[float]:
    """Centralised training (benchmarks, baselines); returns the mean loss per epoch."""
    device = next(model.parameters()).device
    opt = make_optimizer(trainable(model).values(), optimizer, lr, weight_decay=weight_decay)
    losses = []
    for _ in range(epochs):
        model.train()
        total, count = 0.0, 0
        for images, labels in loader:
            terms = loss_terms(model, images.to(device), labels.to(device))
            opt.zero_grad(set_to_none=True)
            terms.total.backward()
            opt.step()
            total += terms.total.item() * len(labels)
            count += len(labels)
        losses.append(total / max(count, 1))
    return losses


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable[Batch]) -> dict[str, float]:
    """Top-1 accuracy and mean cross-entropy; no shuffle, no mask (eval mode)."""
    device = next(model.parameters()).device
    model.eval()
    loss, correct, count = 0.0, 0, 0
    for images, labels in loader:
        images, labels = images.to(device), labels.to(device)
        logits = model(to_model_input(model, images))
        loss += F.cross_entropy(logits, labels, reduction="sum").item()
        correct += (logits.argmax(-1) == labels).sum().item()
        count += len(labels)
    if count == 0:
        raise ValueError("evaluate: the evaluation set is empty")
    return {"loss": loss / count, "accuracy": correct / count, "count": float(count)}
