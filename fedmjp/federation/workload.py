"""What one federation member computes, independent of Flower.

Clients call ``client_round``; the server calls ``build_model`` and ``evaluate_global``.
Everything is derived from the arm (scenario) plus seed, so runs repeat exactly.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import timm
import torch
from torch import nn
from torch.utils.data import Dataset

from .. import models  # noqa: F401  (registers fedmjp's models with timm)
from .checkpoint import load_weights
from ..data.loading import load_dataset
from ..data.augment import augment
from ..data.partition import partitioner
from ..data.partition_cache import cached_partition
from ..models.fixed_pos_embed import fix_pos_embed
from ..errors import InputError
from ..scenario import Arm
from .train import LocalResult, compute_gradient, evaluate, local_update, resolve_device, seed_jigsaw

if TYPE_CHECKING:
    from flwr_datasets.partitioner import Partitioner


def build_model(arm: Arm) -> nn.Module:
    """The arm's model, initialised from the scenario seed (same weights for every arm), or from
    ``model.weights``."""
    torch.manual_seed(arm.seed)
    model = timm.create_model(arm.model.name, **arm.model.create_kwargs())
    if arm.model.fixed_pos_embed:  # defence: no position-embedding gradient to share
        fix_pos_embed(model)
    if arm.model.weights:
        try:
            load_weights(model, arm.model.weights)
        except ValueError as exc:
            raise InputError(f"arms.{arm.name}.model.weights: {exc}") from None
    return model


def input_size(arm: Arm) -> int:
    cfg = timm.models.get_pretrained_cfg(arm.model.name)
    size = arm.model.kwargs.get("img_size", cfg.input_size[-1] if cfg else 224)
    return int(size)


def derive_seed(*parts: object) -> int:
    """A stable 63-bit seed from any parts (Python's hash() is salted per process)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def _data_key(arm: Arm) -> tuple:
    """What identifies an arm's data: source, input size, root, name, seed, crops per photo."""
    d = arm.data
    return d.source, input_size(arm), d.root, d.name, arm.seed, d.crops_per_photo


@functools.lru_cache(maxsize=4)
def _dataset(key: tuple, split: str) -> Dataset:
    source, size, root, name, seed, crops = key
    return load_dataset(source, split, size, root=root, name=name, seed=seed, crops_per_photo=crops)


def dataset(arm: Arm, split: str) -> Dataset:
    return _dataset(_data_key(arm), split)


@functools.lru_cache(maxsize=8)
def _partitioner(key: tuple, num: int, method: str, alpha: float, shards: int) -> Partitioner:
    seed = key[4]
    return partitioner(_dataset(key, "train").targets, num, method, alpha=alpha, shards_per_partition=shards,
                       seed=seed)


@functools.lru_cache(maxsize=1024)
def _partition(key: tuple, num: int, method: str, alpha: float, shards: int, partition_id: int) -> np.ndarray:
    return cached_partition(_dataset(key, "train").targets, num, method, alpha, shards, key[4], partition_id,
                            lambda: _partitioner(key, num, method, alpha, shards))


def partition_indices(arm: Arm, partition_id: int) -> np.ndarray:
    """This client's examples; only its own partition is cut (a Ray worker serves a few of many), once."""
    p = arm.data.partitioning
    return _partition(_data_key(arm), arm.clients.num_clients, p.method, p.alpha, p.shards_per_partition,
                      partition_id)


def stack(data: Dataset, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = zip(*(data[int(i)] for i in indices))
    return torch.stack(images), torch.tensor(labels, dtype=torch.long)


def client_batches(arm: Arm, partition_id: int, server_round: int) -> list[np.ndarray]:
    """Indices (into the train split) of the batches this client uses in this round.

    FedSGD: one batch. FedAvg: ``local_steps`` batches, or ``local_epochs`` passes.
    """
    own = partition_indices(arm, partition_id)
    if len(own) == 0:
        raise ValueError(f"partition {partition_id} is empty")
    rng = np.random.default_rng(derive_seed(arm.seed, "batches", server_round, partition_id))
    t = arm.training
    size = min(t.batch_size, len(own))
    if t.mode == "fedsgd":
        return [rng.choice(own, size=size, replace=False)]
    batches: list[np.ndarray] = []
    epochs = t.local_epochs if t.local_steps is None else None
    while True:
        order = rng.permutation(own)
        for start in range(0, len(order) - size + 1, size):
            batches.append(order[start : start + size])
            if t.local_steps is not None and len(batches) == t.local_steps:
                return batches
        if epochs is not None:
            epochs -= 1
            if epochs == 0:
                return batches


@dataclass
class ClientRound:
    result: LocalResult
    batches: list[np.ndarray]


@functools.lru_cache(maxsize=2)
def _client_model(arm_json: str) -> nn.Module:
    arm = Arm.model_validate_json(arm_json)
    return build_model(arm).to(resolve_device(arm.device))


def client_round(arm: Arm, weights: dict[str, torch.Tensor], partition_id: int, server_round: int) -> ClientRound:
    """Train on this client's partition from the global weights; MJP is applied here."""
    # One model per process and arm, reloaded each round (Ray reuses client processes).
    model = _client_model(arm.model_dump_json())
    model.load_state_dict(weights)
    torch.manual_seed(derive_seed(arm.seed, "torch", server_round, partition_id))
    seed_jigsaw(model, derive_seed(arm.seed, "jigsaw", server_round, partition_id))
    data = dataset(arm, "train")
    batches = client_batches(arm, partition_id, server_round)
    t = arm.training
    if t.mode == "fedsgd":
        result = compute_gradient(model, *stack(data, batches[0]))
    else:
        # Epochs actually run: a fixed step count may end mid-epoch (counted as started).
        own = len(partition_indices(arm, partition_id))
        epochs = t.local_epochs if t.local_steps is None else -(-len(batches) * len(batches[0]) // own)
        stacked = (stack(data, b) for b in batches)
        if t.augment:
            stacked = ((augment(images), labels) for images, labels in stacked)
        result = local_update(model, stacked, lr=t.lr_at(server_round), optimizer=t.optimizer,
                              momentum=t.momentum, epochs=epochs)
    return ClientRound(result, batches)


def heldout_indices(arm: Arm) -> np.ndarray:
    """The held-out examples evaluated each round: all, or a seeded random ``test_limit`` of them
    (test splits are often sorted by class, so the first N would be one class)."""
    count = len(dataset(arm, "test"))
    if arm.data.test_limit is None or arm.data.test_limit >= count:
        return np.arange(count)
    rng = np.random.default_rng(derive_seed(arm.seed, "test"))
    return np.sort(rng.choice(count, size=arm.data.test_limit, replace=False))


def heldout_batches(arm: Arm, shard: int = 0, shards: int = 1,
                    batch_size: int = 256) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The held-out examples in batches; shard ``k`` of ``n`` is every n-th from the k-th, so the
    shards of a federated evaluation together cover the held-out set exactly once."""
    data, indices = dataset(arm, "test"), heldout_indices(arm)[shard::shards]
    for start in range(0, len(indices), batch_size):
        yield stack(data, indices[start : start + batch_size])


def evaluate_global(arm: Arm, model: nn.Module, shard: int = 0, shards: int = 1) -> dict[str, float]:
    """Top-1 and loss of the global model on the held-out test split (or one shard of it)."""
    return evaluate(model, heldout_batches(arm, shard, shards))


def server_evaluates(arm: Arm) -> bool:
    """Whether the server evaluates on its own copy of the test split (``data.evaluate_on``; "auto":
    when it can load it, which a deployed server without the clients' data cannot)."""
    if arm.data.evaluate_on != "auto":
        return arm.data.evaluate_on == "server"
    try:
        dataset(arm, "test")
    except (ValueError, OSError, RuntimeError):
        return False
    return True
