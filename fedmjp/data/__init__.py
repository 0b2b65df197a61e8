"""Data sets (offline built-ins and real loaders) and client partitioners."""

from fedmjp.data.loading import class_count, load_dataset
from fedmjp.data.partition import partition

__all__ = ["class_count", "load_dataset", "partition"]
