"""Whether an arm's data splits among its clients as asked, checked before a run writes anything.

Light: labels and partitions come from the disk caches (``fedmjp.data``) once a process on this machine has
read them, so the CLI's check imports neither torch nor the data set's library. ``validate`` checks a CIFAR set
that is not downloaded yet on its class counts; a run downloads it here, once, before its workers read it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data.label_cache import cached_labels
from ..data.partition import partitioner
from ..data.partition_cache import cached_partition
from ..data.sources import CIFAR_TRAIN_PER_CLASS, FIXED_CLASSES, on_disk
from ..errors import InputError
from ..scenario import Arm

# partition.py's field names, as a scenario spells them.
_PARTITION_FIELDS = {"num_partitions": "clients.num_clients", "alpha": "data.partitioning.alpha",
                     "shards_per_partition": "data.partitioning.shards_per_partition"}


@dataclass(frozen=True)
class Split:
    """How an arm's training examples split among its clients (what ``validate`` prints)."""

    examples: int
    clients: int
    first: int  # examples of partition 0
    method: str
    counted: bool  # checked on the data set's class counts (not downloaded yet), not on its labels

    def describe(self) -> str:
        where = " (not downloaded yet: checked on its class counts)" if self.counted else ""
        return (f"{self.examples:,} training examples over {self.clients} clients, {self.method} "
                f"(partition 0: {self.first:,}){where}")


def train_labels(arm: Arm, download: bool) -> tuple[np.ndarray, bool]:
    """The labels of the arm's training split (the data set is loaded only when they are not on disk), and
    whether they are only its class counts (a CIFAR set not downloaded yet, and not to be: its labels in class
    order)."""
    d = arm.data
    if not download and not on_disk(d.source, d.root):
        return np.repeat(np.arange(FIXED_CLASSES[d.source]), CIFAR_TRAIN_PER_CLASS[d.source]), True

    def load() -> np.ndarray:
        from .workload import dataset  # torch and timm, on a miss only

        return dataset(arm, "train").targets

    return cached_labels(d.source, "train", d.root, d.name, arm.seed, d.crops_per_photo, load), False


def check_partitioning(arm: Arm, download: bool = True) -> Split:
    """Cut the arm's partitions before any run starts, so that a split the data cannot give (more clients
    than training examples, a Dirichlet draw that gives up) is one line naming the scenario field, not a
    client's traceback rounds later. ``download``: fetch a data set that is not on disk (else check it on its
    class counts)."""
    p = arm.data.partitioning
    try:
        # A split cut before (on disk) is known to be possible: partitioners cut all partitions or none.
        targets, counted = train_labels(arm, download)
        first = cached_partition(targets, arm.clients.num_clients, p.method, p.alpha, p.shards_per_partition,
                                 arm.seed, 0, lambda: partitioner(targets, arm.clients.num_clients, p.method,
                                                                  alpha=p.alpha,
                                                                  shards_per_partition=p.shards_per_partition,
                                                                  seed=arm.seed))
    except ValueError as exc:
        field, _, problem = str(exc).partition(": ")
        raise InputError(f"arms.{arm.name}.{_PARTITION_FIELDS.get(field, field)}: {problem}") from None
    return Split(len(targets), arm.clients.num_clients, len(first), p.method, counted)
