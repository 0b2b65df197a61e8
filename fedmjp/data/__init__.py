"""Data sets (offline built-ins and real loaders) and client partitioners."""

from fedmjp.data.loading import load_dataset
from fedmjp.data.partition import partition

__all__ = ["load_dataset", "partition"]
