"""Whether an arm's data splits among its clients as asked, checked before a run writes anything.

Light: labels and partitions come from the disk caches (``fedmjp.data``) once a process on this machine has
read them, so the CLI's check imports neither torch nor the data set's library.
"""

from __future__ import annotations

import numpy as np

from ..data.label_cache import cached_labels
from ..data.partition import partitioner
from ..data.partition_cache import cached_partition
from ..errors import InputError
from ..scenario import Arm

# partition.py's field names, as a scenario spells them.
_PARTITION_FIELDS = {"num_partitions": "clients.num_clients", "alpha": "data.partitioning.alpha",
                     "shards_per_partition": "data.partitioning.shards_per_partition"}


def train_labels(arm: Arm) -> np.ndarray:
    """The labels of the arm's training split (the data set is loaded only when they are not on disk)."""
    def load() -> np.ndarray:
        from .workload import dataset  # torch and timm, on a miss only

        return dataset(arm, "train").targets

    d = arm.data
    return cached_labels(d.source, "train", d.root, d.name, arm.seed, d.crops_per_photo, load)


def check_partitioning(arm: Arm) -> None:
    """Cut the arm's partitions before any run starts, so that a split the data cannot give (more clients
    than training examples, a Dirichlet draw that gives up) is one line naming the scenario field, not a
    client's traceback rounds later."""
    p = arm.data.partitioning
    try:
        # A split cut before (on disk) is known to be possible: partitioners cut all partitions or none.
        targets = train_labels(arm)
        cached_partition(targets, arm.clients.num_clients, p.method, p.alpha, p.shards_per_partition, arm.seed, 0,
                         lambda: partitioner(targets, arm.clients.num_clients, p.method, alpha=p.alpha,
                                             shards_per_partition=p.shards_per_partition, seed=arm.seed))
    except ValueError as exc:
        field, _, problem = str(exc).partition(": ")
        raise InputError(f"arms.{arm.name}.{_PARTITION_FIELDS.get(field, field)}: {problem}") from None
