"""Split a data set's indices among clients with flwr-datasets' partitioners."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from flwr_datasets.partitioner import Partitioner

METHODS = ("iid", "dirichlet", "shards")
# flwr-datasets' default minimum partition size, lowered for small data sets so that
# many clients on few samples stay possible (every client still gets one sample).
MAX_MIN_PARTITION_SIZE = 10


def partition(targets: np.ndarray, num_partitions: int, method: str = "iid", **options: Any) -> list[np.ndarray]:
    """Disjoint index arrays, one per partition (``partitioner``'s parameters); the same seed gives the
    same partitions."""
    split = partitioner(targets, num_partitions, method, **options)
    return [partition_rows(split, i) for i in range(int(num_partitions))]


def partitioner(
    targets: np.ndarray,
    num_partitions: int,
    method: str = "iid",
    *,
    alpha: float = 0.5,
    shards_per_partition: int = 2,
    seed: int = 0,
) -> Partitioner:
    """The flwr-datasets partitioner of ``targets``, ready to give one partition at a time
    (``partition_rows``): a client needs only its own, and with 100,000 clients all of them take minutes.

    Parameters
    ----------
    targets : 1-D integer labels of the whole data set (``dataset.targets``).
    num_partitions : number of clients.
    method : "iid" (uniform random, equal sizes), "dirichlet" (label skew with
        concentration ``alpha``: smaller is more skewed) or "shards" (sort by label,
        cut into ``num_partitions * shards_per_partition`` equal shards, deal them out;
        the remainder of the division is left out).
    """
    # Imported here: the server and the CLI never partition, and these would cost every process their import.
    import datasets
    from flwr_datasets.partitioner import DirichletPartitioner, IidPartitioner, ShardPartitioner

    targets = np.asarray(targets)
    _check(targets, num_partitions, method, alpha, shards_per_partition)
    num_partitions, shards_per_partition = int(num_partitions), int(shards_per_partition)  # flwr wants int
    table = datasets.Dataset.from_dict({"label": targets.astype(np.int64), "index": np.arange(len(targets))})
    split: Partitioner
    if method == "iid":
        table = table.shuffle(seed=seed)  # IidPartitioner cuts contiguous blocks
        split = IidPartitioner(num_partitions)
    elif method == "dirichlet":
        min_size = max(1, min(MAX_MIN_PARTITION_SIZE, len(targets) // (2 * num_partitions)))
        split = DirichletPartitioner(
            num_partitions, "label", alpha=float(alpha), min_partition_size=min_size, seed=seed
        )
    else:
        split = ShardPartitioner(
            num_partitions, "label", num_shards_per_partition=shards_per_partition, seed=seed
        )
    split.dataset = table
    return split


def partition_rows(split: Partitioner, partition_id: int) -> np.ndarray:
    """Indices (into the data set) of one partition of ``split``."""
    try:
        with warnings.catch_warnings():
            # datasets' sort (shards) trips a pyarrow deprecation users cannot act on.
            warnings.filterwarnings("ignore", message="Specifying null_placement", category=FutureWarning)
            # Dirichlet redraws print the whole alpha vector per try; a draw that gives up raises below.
            warnings.filterwarnings("ignore", message="The specified min_partition_size", category=UserWarning)
            # The "index" column survives the partitioners' own shuffles and sorts.
            return np.asarray(split.load_partition(partition_id).with_format("numpy")["index"], dtype=np.int64)
    except ValueError as error:  # e.g. Dirichlet sampling gave up on tiny partitions
        method = type(split).__name__.removesuffix("Partitioner").lower()
        field = "alpha" if method == "dirichlet" else "num_partitions"
        raise ValueError(f"{field}: {method} partitioning failed: {error}") from error


def _check(targets: np.ndarray, num_partitions: int, method: str, alpha: float, shards_per_partition: int) -> None:
    if targets.ndim != 1 or not np.issubdtype(targets.dtype, np.integer):
        raise ValueError(f"targets: expected a 1-D integer array, got {targets.dtype} of shape {targets.shape}")
    if method not in METHODS:
        raise ValueError(f"method: unknown {method!r} (choose from {', '.join(METHODS)})")
    if not isinstance(num_partitions, (int, np.integer)) or num_partitions < 1:
        raise ValueError(f"num_partitions: must be a positive integer, got {num_partitions!r}")
    if num_partitions > len(targets):
        raise ValueError(f"num_partitions: {num_partitions} partitions but only {len(targets)} samples")
    if method == "dirichlet" and not alpha > 0:
        raise ValueError(f"alpha: must be > 0, got {alpha}")
    if method == "shards":
        if not isinstance(shards_per_partition, (int, np.integer)) or shards_per_partition < 1:
            raise ValueError(f"shards_per_partition: must be a positive integer, got {shards_per_partition!r}")
        if num_partitions * shards_per_partition > len(targets):
            raise ValueError(
                f"shards_per_partition: {num_partitions} x {shards_per_partition} shards "
                f"but only {len(targets)} samples"
            )
