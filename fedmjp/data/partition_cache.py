"""A client's partition cut once per machine, then read from disk.

Cutting a partition with flwr-datasets imports Hugging Face ``datasets`` (pyarrow, pandas, fsspec): about
1.5 to 3 s of CPU in every process that partitions, which in a Flower simulation is every Ray worker of every
run, and the CLI that checks the split before a run. The rows of a partition depend only on the labels, the
partitioner's parameters and the versions of the two libraries that cut it, so the first process to cut one
stores it under that key and later ones (the next worker, the next run, the next seed of a sweep) load it.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import version
from typing import TYPE_CHECKING

import numpy as np

from .disk_cache import cached_array, key_of
from .partition import partition_rows

if TYPE_CHECKING:
    from flwr_datasets.partitioner import Partitioner


def partition_key(targets: np.ndarray, num_partitions: int, method: str, alpha: float, shards_per_partition: int,
                  seed: int, partition_id: int) -> str:
    """What a partition's rows depend on, hashed."""
    return key_of({"num_partitions": int(num_partitions), "method": method, "alpha": float(alpha),
                   "shards_per_partition": int(shards_per_partition), "seed": int(seed),
                   "partition_id": int(partition_id), "flwr-datasets": version("flwr-datasets"),
                   "datasets": version("datasets")}, np.ascontiguousarray(targets, dtype=np.int64).tobytes())


def cached_partition(targets: np.ndarray, num_partitions: int, method: str, alpha: float, shards_per_partition: int,
                     seed: int, partition_id: int, split: Callable[[], Partitioner]) -> np.ndarray:
    """Partition ``partition_id`` of ``partitioner``'s split with these parameters: from disk when it was cut
    before on this machine, else cut from ``split()`` and stored."""
    key = partition_key(targets, num_partitions, method, alpha, shards_per_partition, seed, partition_id)
    return cached_array("partitions", key, lambda: partition_rows(split(), partition_id))
