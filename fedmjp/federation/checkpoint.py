"""Per-round checkpoints of the server, and resuming from the last complete round.

After every round the server saves, atomically: the global model, the server optimiser's
state, the client sampler's state, and how far the per-round metrics and the audit had got. The state is
copied when the round's training ends (``snapshot``) and written while the next round trains.
Resuming cuts those two files back to that point (the records of a round that never
finished) and continues; the finished run equals an uninterrupted one with the same seed.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from .rundir import atomic_torch_save


@dataclass
class Checkpoint:
    round: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    sampler: tuple
    metrics_bytes: int
    audit_bytes: int


def file_size(path: Path) -> int:
    """How far an append-only file has got (0 before it exists)."""
    return path.stat().st_size if path.exists() else 0


def snapshot(server_round: int, model: torch.nn.Module, optimizer: Any, sampler_state: tuple, metrics: Path,
             audit: Path) -> Checkpoint:
    """The server's state now, copied: the next round steps the live model and optimiser while this one is
    written."""
    return Checkpoint(server_round, {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()},
                      copy.deepcopy(optimizer.state_dict()), sampler_state, file_size(metrics), file_size(audit))


def save(path: Path, state: Checkpoint) -> None:
    atomic_torch_save(path, {f.name: getattr(state, f.name) for f in fields(state)})


def load(path: Path) -> Checkpoint | None:
    if not path.exists():
        return None
    try:
        state = torch.load(path, weights_only=True)
        return Checkpoint(**state)
    except Exception as exc:  # a damaged checkpoint is an input problem, not a crash
        raise ValueError(f"{path}: cannot read the checkpoint ({type(exc).__name__})") from None


def load_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Load a state dict (a run's ``final_weights.pt``) or a resumable checkpoint (its ``model`` entry)
    into ``model``; ValueError naming the file when it cannot be read or does not fit."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged or foreign file is an input problem
        raise ValueError(f"cannot read {path} ({type(exc).__name__})") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, AttributeError, TypeError):
        raise ValueError(f"{path} does not fit the model") from None


def cut_back(path: Path, size: int) -> None:
    """Drop what a crashed round appended after the checkpoint (never earlier records)."""
    if path.exists() and path.stat().st_size > size:
        with open(path, "r+b") as f:
            f.truncate(size)
            os.fsync(f.fileno())
