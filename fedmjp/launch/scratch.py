"""Scratch folders in the system's temp dir that a killed run does not leave behind.

A run stopped by SIGKILL cannot remove its scratch (the staged app, Flower's home, Ray's session files: about
2 MB a run; the suite's kill tests left three per run). Each folder's name carries the id of the process that
made it, ``fedmjp-KIND-PID-XXXXXXXX``, and making a new one first removes those whose process is gone.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

NAME = re.compile(r"fedmjp-[a-z]+(?:-[a-z]+)*-(?P<pid>\d+)-[a-z0-9_]{8}")


def scratch_dir(kind: str, root: Path | None = None) -> Path:
    """A new folder ``fedmjp-KIND-PID-XXXXXXXX`` in ``root`` (the temp dir), after removing stale ones."""
    root = root or Path(tempfile.gettempdir())
    remove_stale(root)
    return Path(tempfile.mkdtemp(prefix=f"fedmjp-{kind}-{os.getpid()}-", dir=root))


@contextmanager
def scratch(kind: str) -> Iterator[Path]:
    """``scratch_dir`` removed on leaving, as ``tempfile.TemporaryDirectory``."""
    path = scratch_dir(kind)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def remove_stale(root: Path) -> list[Path]:
    """Remove this user's scratch folders in ``root`` whose process has ended; returns them."""
    removed = []
    for path in root.glob("fedmjp-*"):
        if not (match := NAME.fullmatch(path.name)) or psutil.pid_exists(int(match["pid"])):
            continue
        try:
            if not path.is_dir() or path.stat().st_uid != os.getuid():
                continue
        except OSError:  # another run removed it meanwhile
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed

