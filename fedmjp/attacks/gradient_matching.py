"""The gradient-matching core shared by every optimisation attack (ig, dlg, april-opt, adaptive).

An attack is a ``MatchingProblem`` (what the client would have sent for candidate images, and
what it did send) plus an optimiser. The candidate has a leading restart dimension. Each restart
needs its own simulated gradient (the distance is not additive over restarts), so restarts cannot
simply be stacked along the batch. One restart takes a plain path (ordinary autograd, no vmap).
Several restarts are mapped with ``torch.func.vmap`` (``batching="vmap"``, the default) or
simulated one after the other (``batching="loop"``); vmap measured faster for 2 restarts on the
CPU although it materialises per-restart weight gradients (bench/attack_speed.py).
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from ..models import to_model_input

Tensors = dict[str, Tensor]
# (params, images in [0, 1]) -> logits; the default is the attacker's plain (unshuffled) forward.
Forward = Callable[[Tensors, Tensor], Tensor]
# candidate images (B, 3, H, W) in [0, 1] -> what the client would have sent, by parameter name.
Simulate = Callable[[Tensor], Tensors]
Distance = Literal["cosine", "l2"]
Batching = Literal["loop", "vmap"]


def plain_forward(model: nn.Module) -> Forward:
    def forward(params: Tensors, images: Tensor) -> Tensor:
        return functional_call(model, params, (to_model_input(model, images),))

    return forward


def weights_of(model: nn.Module, names: list[str]) -> Tensors:
    """Detached copies of the named parameters: the point every candidate gradient is taken at."""
    own = dict(model.named_parameters())
    return {name: own[name].detach() for name in names}


class GradientSimulator:
    """The client's FedSGD reply for candidate images: d CE / d params at ``params``.

    Calling it uses ``torch.func.grad`` (safe under ``vmap``); ``plain`` takes the same gradient
    with ordinary autograd on leaf copies of the parameters, which is cheaper for one restart.
    """

    def __init__(self, forward: Forward, params: Tensors, labels: Tensor) -> None:
        self.forward, self.params, self.labels = forward, params, labels
        self._leaves = {name: p.detach().clone().requires_grad_(True) for name, p in params.items()}
        self._grad = grad(self._loss)

    def _loss(self, p: Tensors, images: Tensor) -> Tensor:
        return F.cross_entropy(self.forward(p, images), self.labels)

    def __call__(self, images: Tensor) -> Tensors:
        return self._grad(self.params, images)

    def plain(self, images: Tensor) -> Tensors:
        with torch.enable_grad():
            loss = self._loss(self._leaves, images)
            grads = torch.autograd.grad(
                loss, list(self._leaves.values()), create_graph=images.requires_grad, allow_unused=True,
                materialize_grads=True,  # unused parameters (e.g. an MJP model's DAL head in eval): zeros, as func.grad
            )
        return dict(zip(self._leaves, grads))


def gradient_simulator(forward: Forward, params: Tensors, labels: Tensor) -> Simulate:
    """The client's FedSGD reply for candidate images: d CE / d params at ``params``."""
    return GradientSimulator(forward, params, labels)


@dataclass(frozen=True)
class CosineTerm:
    """``weight * (1 - cos)`` on one tensor's token rows from ``rows_from`` on, optionally centred.

    APRIL's term is the whole ``pos_embed`` gradient. In a ViT near initialisation that gradient is
    dominated by the class-token row and by a component shared by every patch row (attention is
    nearly uniform), so the rows' position-specific part, which carries each patch's content, is
    ~1e-5 of the squared norm and invisible to a whole-gradient cosine. Centring the patch rows
    (subtracting their mean) gives that part its own term.
    """

    name: str
    weight: float
    rows_from: int = 0
    centred: bool = False

    def part(self, tensor: Tensor) -> Tensor:
        rows = tensor.reshape(-1, tensor.shape[-1])[self.rows_from:]
        if self.centred:
            rows = rows - rows.mean(0, keepdim=True)
        return rows.flatten()


@dataclass
class MatchingProblem:
    """What to match: ``simulate(candidate)`` against ``target``, name by name.

    ``weights`` scales each parameter's share of the distance (per-layer weighting);
    ``terms`` add ``weight * (1 - cos)`` on parts of single tensors (see ``CosineTerm``).
    """

    simulate: Simulate
    target: Tensors
    distance: Distance = "cosine"
    weights: dict[str, float] = field(default_factory=dict)
    terms: list[CosineTerm] = field(default_factory=list)
    batching: Batching = "vmap"

    def __post_init__(self) -> None:
        # Fixed order and constants, computed once rather than every iteration.
        self.names = list(self.target)
        self._w = [float(self.weights.get(n, 1.0)) for n in self.names]
        self._t = [self.target[n] for n in self.names]
        self._t_norm = torch.sqrt(sum(w * t.pow(2).sum() for w, t in zip(self._w, self._t)))
        self._w_vec = torch.tensor(self._w)
        self._term_targets = [term.part(self.target[term.name]) for term in self.terms]

    def distance_of(self, simulated: Tensors, fused: bool = False) -> Tensor:
        """Scalar distance between one simulated reply and the target.

        ``fused`` computes the norms with one ``torch._foreach_norm`` (not available under vmap).
        """
        sims = [simulated[n] for n in self.names]
        if self.distance == "cosine":
            dot = torch.stack([(s * t).sum() for s, t in zip(sims, self._t)]) @ self._w_vec
            norms = torch._foreach_norm(sims) if fused else [s.norm() for s in sims]
            norm = torch.sqrt(torch.stack(norms).pow(2) @ self._w_vec)
            value = 1 - dot / (norm * self._t_norm + 1e-12)
        else:
            value = sum(w * (s - t).pow(2).sum() for w, s, t in zip(self._w, sims, self._t))
        for term, target in zip(self.terms, self._term_targets):
            value = value + term.weight * (1 - F.cosine_similarity(term.part(simulated[term.name]), target, 0))
        return value

    def per_restart(self, images: Tensor) -> Tensor:
        """(R, B, 3, H, W) candidates -> (R,) distances (plain autograd per restart, or one vmap)."""
        if self.batching == "vmap" and images.shape[0] > 1:
            return vmap(lambda x: self.distance_of(self.simulate(x)))(images)
        simulate = getattr(self.simulate, "plain", self.simulate)
        return torch.stack([self.distance_of(simulate(x), fused=True) for x in images])


def total_variation(images: Tensor) -> Tensor:
    """Mean absolute difference of neighbouring pixels, per restart: (R, B, C, H, W) -> (R,)."""
    dx = (images[..., :, 1:] - images[..., :, :-1]).abs().flatten(1).mean(1)
    dy = (images[..., 1:, :] - images[..., :-1, :]).abs().flatten(1).mean(1)
    return dx + dy


def patch_borders(images: Tensor, patch: int) -> Tensor:
    """GradViT's patch prior (Hatamizadeh et al., CVPR 2022): the mean squared difference of the pixels that
    face each other across the borders of neighbouring patches, per restart: (R, B, C, H, W) -> (R,). A ViT
    sees each patch on its own, so nothing else ties a reconstruction's patches together."""
    across_columns = images[..., :, patch::patch] - images[..., :, patch - 1 : -1 : patch]
    across_rows = images[..., patch::patch, :] - images[..., patch - 1 : -1 : patch, :]
    return across_columns.pow(2).flatten(1).mean(1) + across_rows.pow(2).flatten(1).mean(1)


@dataclass
class Budget:
    """Optimiser settings. ``steps`` counts objective evaluations (one per iteration). ``patch_prior``: the
    weight of :func:`patch_borders` (0: off)."""

    steps: int = 200
    restarts: int = 2
    lr: float = 0.1
    tv: float = 0.0
    patch_prior: float = 0.0
    optimizer: Literal["adam", "lbfgs"] = "adam"
    signed: bool = True
    seed: int = 0
    log_every: int = 50


@dataclass
class Optimised:
    variable: Tensor  # (B, ...) the best restart's variable
    start: Tensor  # (B, ...) its data-free starting point
    loss: float  # its final matching distance
    losses: list[float]  # final matching distance of every restart
    history: list[float]  # best matching distance at logging intervals


def optimise(
    problem: MatchingProblem,
    start: Tensor,
    budget: Budget,
    to_images: Callable[[Tensor], Tensor] = lambda v: v,
    patch: int | None = None,
) -> Optimised:
    """Minimise distance + tv * TV (+ patch_prior * the patch borders' mismatch, with the model's ``patch``
    size) over a (R, ...) variable boxed to [0, 1]; keep the best restart.

    ``to_images`` maps the variable to (R, B, 3, H, W) images (identity for whole images; the
    adaptive attacker optimises only the masked patches and pastes them into known ones).
    """
    if budget.patch_prior and patch is None:
        raise ValueError("patch_prior needs the model's patch size")
    variable = start.clone().requires_grad_(True)

    def objective() -> tuple[Tensor, Tensor]:
        images = to_images(variable)
        match = problem.per_restart(images)
        total = match + budget.tv * total_variation(images) if budget.tv else match
        if budget.patch_prior:
            total = total + budget.patch_prior * patch_borders(images, patch)
        return match, total.sum()  # restarts are independent: the sum separates

    history = _adam(variable, objective, budget) if budget.optimizer == "adam" else _lbfgs(variable, objective, budget)
    final = problem.per_restart(to_images(variable).detach()).detach()
    best = int(final.nan_to_num(float("inf")).argmin())
    return Optimised(variable.detach()[best], start[best], float(final[best]), final.tolist(), history)


# What a front end (the CLI's progress bar) is told at each logging interval: (steps done, steps, best matching
# distance so far). Unset in the library: a round's audit shows no bar.
ON_PROGRESS: ContextVar[Callable[[int, int, float], None] | None] = ContextVar("on_progress", default=None)


def _report(step: int, budget: Budget, best: float) -> None:
    if (report := ON_PROGRESS.get()) is not None:
        report(step + 1, budget.steps, best)


def _adam(variable: Tensor, objective: Callable[[], tuple[Tensor, Tensor]], budget: Budget) -> list[float]:
    opt = torch.optim.Adam([variable], lr=budget.lr)
    milestones = [int(budget.steps * f) for f in (3 / 8, 5 / 8, 7 / 8)]
    schedule = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.1)
    history = []
    for step in range(budget.steps):
        match, total = objective()
        (variable.grad,) = torch.autograd.grad(total, variable)
        if budget.signed:
            variable.grad.sign_()  # IG: signed gradients are more robust to the loss's scale
        opt.step()
        schedule.step()
        with torch.no_grad():
            variable.clamp_(0, 1)
        if step % budget.log_every == 0:
            history.append(float(match.detach().min()))  # the only sync: at logging intervals
            _report(step, budget, history[-1])
    return history


def _lbfgs(variable: Tensor, objective: Callable[[], tuple[Tensor, Tensor]], budget: Budget) -> list[float]:
    # max_iter=1 without line search: one objective evaluation per step, history kept across steps.
    opt = torch.optim.LBFGS([variable], lr=budget.lr, max_iter=1, history_size=100)
    history = []
    last: list[Tensor] = []

    def closure() -> Tensor:
        match, total = objective()
        (grad_,) = torch.autograd.grad(total, variable)
        variable.grad = grad_.contiguous()  # L-BFGS views it flat (a batch's gradient can be strided)
        last[:] = [match.detach()]
        return total.detach()

    for step in range(budget.steps):
        opt.step(closure)
        with torch.no_grad():
            # DLG is unconstrained; a diverged restart is reset rather than poisoning the batch.
            variable.nan_to_num_(0.5).clamp_(0, 1)
        if step % budget.log_every == 0:
            history.append(float(last[0].min()))
            _report(step, budget, history[-1])
    return history
