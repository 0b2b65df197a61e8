"""Arrays computed once per machine and read back from disk by every later process.

A Flower simulation repeats the same data work in every process (the CLI's check, the ServerApp, each Ray
worker) and every run. What depends only on a key (the versions and parameters that made it) is stored under
``$FEDMJP_CACHE_DIR`` (default ``${XDG_CACHE_HOME:-~/.cache}/fedmjp``) by the first process that computes it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

CACHE_ENV = "FEDMJP_CACHE_DIR"


def cache_dir() -> Path:
    """``$FEDMJP_CACHE_DIR``, else ``${XDG_CACHE_HOME:-~/.cache}/fedmjp``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fedmjp"


def key_of(parts: dict[str, Any], data: bytes = b"") -> str:
    """A file name for what an array depends on: ``data`` and the JSON of ``parts``, hashed."""
    digest = hashlib.sha256(data)
    digest.update(json.dumps(parts, sort_keys=True).encode())
    return digest.hexdigest()


def cached_array(folder: str, key: str, make: Callable[[], np.ndarray], max_bytes: int | None = None) -> np.ndarray:
    """The array stored under ``folder/key``, else ``make()``, stored (atomically: concurrent processes may make
    the same one; a failed ``make`` stores nothing; an unreadable file is made again) when it has at most
    ``max_bytes``."""
    where = cache_dir() / folder
    path = where / f"{key}.npy"
    try:
        return np.load(path)
    except (OSError, ValueError):  # absent, or unreadable: make it again
        pass
    array = make()
    if max_bytes is not None and array.nbytes > max_bytes:
        return array
    try:
        where.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=where, suffix=".tmp", delete=False) as tmp:
            np.save(tmp, array)
        os.replace(tmp.name, path)
    except OSError:  # a read-only cache folder: the array is still right, only not kept
        pass
    return array
