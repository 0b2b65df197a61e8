"""The run directory: atomic files, the resolved scenario, versions, per-arm metrics.

Layout::

    RUN_DIR/scenario.yaml        resolved scenario (every arm in full)
    RUN_DIR/versions.json        python and package versions
    RUN_DIR/arms/ARM/metrics.jsonl   one line per round
    RUN_DIR/arms/ARM/final_weights.pt
"""

from __future__ import annotations

import io
import json
import os
import platform
import tempfile
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InputError

if TYPE_CHECKING:
    from ..scenario import Scenario

# In a multi-seed run directory: the seeds it runs (each in seed-S/).
SEEDS_FILE = "seeds.json"
PACKAGES = ("fedmjp", "flwr", "flwr-datasets", "torch", "torchvision", "timm", "ray", "numpy", "pydantic",
            "torchmetrics", "scipy")


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` so readers see the old or the new file, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_json(path: Path, obj: Any, mode: int = 0o644) -> None:
    atomic_write(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode(), mode)


def atomic_torch_save(path: Path, obj: Any, mode: int = 0o644) -> None:
    import torch  # here: the CLI writes run directories without torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write(path, buffer.getvalue(), mode)


def prepare_run_dir(scenario: Scenario, out: Path) -> Path:
    """Create the run directory with the resolved scenario and versions (refuses a used one)."""
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"--out: {out} exists and is not empty")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "scenario.yaml", scenario.to_yaml().encode())
    atomic_json(out / "versions.json", versions())
    return out


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def arm_dir(run_dir: Path, arm: str) -> Path:
    return run_dir / "arms" / arm


def arm_finished(run_dir: Path, name: str) -> bool:
    """Whether arm ``name`` ran to its end: its final weights are written last."""
    return (arm_dir(run_dir, name) / "final_weights.pt").exists()


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every record of an append-only JSONL file (``append_jsonl``).

    The rule for all of them: each record is one write ending in a newline, so a last line without its
    newline is a write a crash cut short, and is skipped; a complete line that is not a JSON object is
    corruption, and raises InputError naming the file and line (the CLI exits 2)."""
    if not path.exists():
        return []
    lines = path.read_text().split("\n")
    records = []
    for number, line in enumerate(lines[:-1], start=1):  # lines[-1]: "" or a torn last write
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict):
            raise InputError(f"{path}: line {number} is not valid JSON (corrupted run directory)")
        records.append(record)
    return records


def append_jsonl(path: Path, record: dict[str, Any], mode: int = 0o644) -> None:
    """Append one line with a single write on an O_APPEND descriptor, fsynced (nothing is rewritten)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, mode)
    try:
        os.write(fd, (json.dumps(record, sort_keys=True) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def read_seeds(out: Path) -> list[int] | None:
    """The seeds of a multi-seed run directory (None: a single-seed run directory)."""
    path = out / SEEDS_FILE
    if not path.is_file():
        return None
    try:
        return [int(s) for s in json.loads(path.read_text())["seeds"]]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        raise InputError(f"{path}: not a list of seeds (corrupted run directory)") from None


def seed_dir(out: Path, seed: int) -> Path:
    """The run directory of one seed of a multi-seed run."""
    return out / f"seed-{seed}"


def seed_dirs(out: Path) -> dict[int, Path]:
    """The seeds' run directories under ``out`` (seed -> directory), in seed order."""
    found = {}
    for path in out.glob("seed-*"):
        seed = path.name.removeprefix("seed-")
        if seed.isdigit() and (path / "scenario.yaml").is_file():
            found[int(seed)] = path
    return dict(sorted(found.items()))
