"""Server-side aggregation: weighted mean of client tensors, then a server optimiser step.

FedSGD replies are gradients; FedAvg replies are updates (new minus old weights), turned
into the pseudo-gradient ``-update`` (FedOpt). With SGD at server_lr 1.0 that is exactly
FedAvg; with gradients it is FedSGD at the server learning rate.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .train import ReplyKind, make_optimizer, step_sign, trainable


def weighted_mean(tensors: Sequence[dict[str, torch.Tensor]], weights: Sequence[float]) -> dict[str, torch.Tensor]:
    if not tensors:
        raise ValueError("weighted_mean: nothing to aggregate")
    total = float(sum(weights))
    return {
        name: sum(t[name].double() * (w / total) for t, w in zip(tensors, weights)).float()
        for name in tensors[0]
    }


class ServerOptimizer:
    """Applies aggregated client tensors to the global model with a stateful optimiser."""

    def __init__(self, model: nn.Module, kind: ReplyKind, name: str, lr: float) -> None:
        self.model = model
        self.kind = kind
        self.params = trainable(model)
        self.optimizer = make_optimizer(self.params.values(), name, lr)

    def step(self, tensors: Sequence[dict[str, torch.Tensor]], num_examples: Sequence[float]) -> None:
        mean = weighted_mean(tensors, num_examples)
        # The optimiser descends param.grad: a gradient as it is, an update reversed.
        sign = -step_sign(self.kind)
        for name, param in self.params.items():
            param.grad = (sign * mean[name]).to(param.device, param.dtype)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def state_dict(self) -> dict:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state)
