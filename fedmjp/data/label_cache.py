"""A data set's labels read once per machine, so that checking a split before a run loads no images, torch or
the data set's library.

The labels of a split depend on the source, where it lies (and what that folder holds), the seed and the
library that reads it; a Hugging Face data set can change on the hub under the same name, so its labels are
always read.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import numpy as np

from .. import __version__
from .disk_cache import cached_array, key_of

# The library that reads each source (its version is part of the key).
READER = {"digits": "scikit-learn", "photos": "scikit-image", "cifar10": "torchvision", "cifar100": "torchvision",
          "imagefolder": "torchvision"}


def folder_state(root: str | None) -> list[tuple[str, int]]:
    """What tells a change of a data folder's labels: the modification times of the folder, its entries and
    theirs (a class folder gains or loses a file: its time changes; ``root/train/CLASS`` is two levels down).
    Changes within one tick of the file system's clock (a few ms) are not told apart."""
    if not root or not Path(root).expanduser().is_dir():
        return []
    top = Path(root).expanduser().resolve()
    state = [(".", top.stat().st_mtime_ns)]
    for entry in sorted(os.scandir(top), key=lambda e: e.name):
        state.append((entry.name, entry.stat().st_mtime_ns))
        if entry.is_dir():
            state += [(f"{entry.name}/{sub.name}", sub.stat().st_mtime_ns)
                      for sub in sorted(os.scandir(entry.path), key=lambda e: e.name)]
    return state


def cached_labels(source: str, split: str, root: str | None, name: str | None, seed: int, crops: int | None,
                  load: Callable[[], np.ndarray]) -> np.ndarray:
    """The labels of a split, from disk when read before with the same key, else ``load()`` (and stored)."""
    if source not in READER:
        return load()
    parts = {"source": source, "split": split, "root": str(Path(root).expanduser().resolve()) if root else None,
             "name": name, "seed": seed, "crops": crops, "reader": version(READER[source]), "fedmjp": __version__,
             "folder": folder_state(root)}
    return cached_array("labels", key_of(parts), lambda: np.asarray(load(), dtype=np.int64))
