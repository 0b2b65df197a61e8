"""What the client sent, simulated for candidate data: a gradient, or a replayed FedAvg update.

A FedAvg update is K local SGD steps, not a gradient. When the server knows the local
hyper-parameters (the client reports them in its reply's metrics) it replays them on the
candidate batch, differentiably (Geiping et al. 2020, Dimitrov et al. 2022, "Data leakage in
federated averaging"), with heavy-ball momentum mu as torch's SGD applies it:

    v_{k+1} = mu * v_k + grad L(w_k; candidate batch k)   (v_1 = the first gradient)
    w_{k+1} = w_k - lr * v_{k+1},                          simulated update = w_K - w_0

and the attack matches that against the observed update. Without the hyper-parameters the
update is treated as one (negated, rescaled) gradient of the whole batch, and the threat model
records that the attacker did not know them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import grad

from .base import Observation
from .gradient_matching import Forward, Simulate, Tensors, gradient_simulator


@dataclass
class Replay:
    """The client's local schedule: ``steps`` SGD steps of ``batch_size`` examples at ``lr``, ``momentum``."""

    lr: float
    steps: int
    batch_size: int
    momentum: float = 0.0

    @classmethod
    def from_observation(cls, obs: Observation) -> Replay | None:
        """The schedule when the server knows it and it is replayable (plain SGD), else None."""
        known = obs.local_lr is not None and obs.local_steps is not None and obs.local_batch_size is not None
        if obs.kind != "update" or not known or obs.local_optimizer not in (None, "sgd"):
            return None
        return cls(float(obs.local_lr), int(obs.local_steps), int(obs.local_batch_size),
                   float(obs.local_momentum or 0.0))

    def batches(self, num_examples: int) -> list[Tensor]:
        """Example indices of each local step.

        The client's batch order is unknown, but candidate examples are free variables, so
        consecutive chunks lose nothing for one epoch; over several epochs (steps * batch_size >
        num_examples) the chunks wrap around, which assumes the client did not reshuffle.
        """
        order = torch.arange(self.steps * self.batch_size) % num_examples
        return list(order.view(self.steps, self.batch_size))


def replay_simulator(forward: Forward, params: Tensors, labels: Tensor, replay: Replay) -> Simulate:
    """Candidate images (N, 3, H, W) -> the update K unrolled SGD steps on them would produce."""
    batches = replay.batches(len(labels))

    def simulate(images: Tensor) -> Tensors:
        weights, velocity = params, None
        for idx in batches:
            def loss(p: Tensors, x: Tensor = images[idx], y: Tensor = labels[idx]) -> Tensor:
                return F.cross_entropy(forward(p, x), y)

            step = grad(loss)(weights)
            if replay.momentum:
                velocity = step if velocity is None else {n: replay.momentum * velocity[n] + step[n] for n in step}
                step = velocity
            weights = {name: w - replay.lr * step[name] for name, w in weights.items()}
        return {name: weights[name] - params[name] for name in params}

    return simulate


def observed_target(obs: Observation, replay: Replay | None) -> Tensors:
    """The tensors to match: the update itself when replayed, else a gradient's worth of it."""
    if obs.kind == "gradient" or replay is not None:
        return obs.tensors
    # One SGD step sends -lr * gradient: undo the sign (and the scale when known, for L2 losses).
    scale = -1.0 / obs.local_lr if obs.local_lr else -1.0
    return {name: t * scale for name, t in obs.tensors.items()}


def simulator(forward: Forward, params: Tensors, labels: Tensor, replay: Replay | None) -> Simulate:
    if replay is not None:
        return replay_simulator(forward, params, labels, replay)
    return gradient_simulator(forward, params, labels)
