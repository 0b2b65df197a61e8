"""The Flower run config that carries a scenario's arms to the ServerApp and the ClientApps.

``fedmjp simulate`` and ``fedmjp deploy`` write it (``write_run_config``); the apps read it
(``run_arms_from_run_config``, ``arm_named``). One run may carry several arms, of one run directory or
of several (a sweep's seeds, several scenarios): simulation runs all the arms that share a federation
as one Flower run, so the simulation engine, Ray and the apps start once, not once per arm (about 20 s
each). Every message the server sends names its arm by the arm's key in the run
(``fedmjp.protocol.ARM`` in its config record): its name, or ``J/name`` when the run writes into
several run directories (J counts them), where names repeat. A plain ``flwr run`` names a scenario file
and one arm instead (``scenario``, ``arm``).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from ..errors import InputError
from ..scenario import Arm, load_scenario


@dataclass(frozen=True)
class RunPart:
    """Arms that write into one run directory (``resume``: continue its unfinished arms)."""

    run_dir: Path | str
    arms: Sequence[Arm]
    resume: bool = False


@dataclass(frozen=True)
class RunArm:
    """One arm of a Flower run: its key on the wire, its settings, where it writes."""

    key: str
    arm: Arm
    run_dir: str  # "" for a plain `flwr run`: runs/ARM-TIME
    resume: bool


def run_config(arms: Sequence[Arm], run_dir: Path | str = "", resume: bool = False) -> dict[str, str | bool]:
    """The run config of one run directory's arms, run one after the other in one Flower run."""
    return runs_config([RunPart(run_dir, arms, resume)])


def runs_config(parts: Sequence[RunPart]) -> dict[str, str | bool]:
    """The run config of several run directories' arms, run one after the other in one Flower run."""
    entries = {
        (arm.name if len(parts) == 1 else f"{j}/{arm.name}"):
            {"run-dir": str(part.run_dir), "resume": part.resume, "arm": arm.model_dump(mode="json")}
        for j, part in enumerate(parts) for arm in part.arms
    }
    return {"arms-json": json.dumps(entries)}


def write_run_config(path: Path, parts: Sequence[RunPart]) -> Path:
    """``runs_config`` as a ``--run-config`` TOML file."""
    path.write_text(tomli_w.dumps(runs_config(parts)))
    return path


@functools.lru_cache(maxsize=4)
def _run_arms(arms_json: str, scenario: str, arm_name: str, run_dir: str, resume: bool) -> dict[str, RunArm]:
    if arms_json:
        return {key: RunArm(key, Arm.model_validate(entry["arm"]), entry["run-dir"], entry["resume"])
                for key, entry in json.loads(arms_json).items()}
    arms = load_scenario(scenario).arms
    if arm_name not in arms:
        raise InputError(f"{scenario}: arm {arm_name!r} not found (have {', '.join(arms)})")
    return {arm_name: RunArm(arm_name, arms[arm_name], run_dir, resume)}


def run_arms_from_run_config(run_config: Mapping[str, Any]) -> dict[str, RunArm]:
    """The arms of a run by key, in the order they run (read once per process; do not modify)."""
    return _run_arms(str(run_config.get("arms-json", "")), str(run_config.get("scenario", "")),
                     str(run_config.get("arm", "")), str(run_config.get("run-dir", "")),
                     bool(run_config.get("resume", False)))


def arms_from_run_config(run_config: Mapping[str, Any]) -> dict[str, Arm]:
    """The arms of a run by key, in the order they run."""
    return {key: entry.arm for key, entry in run_arms_from_run_config(run_config).items()}


def arm_named(run_config: Mapping[str, Any], key: str | None) -> Arm:
    """The arm a message names by its key; a message that names none belongs to the run's only arm."""
    arms = arms_from_run_config(run_config)
    if key is None:
        if len(arms) != 1:
            raise ValueError(f"the message names no arm and the run carries {len(arms)} ({', '.join(arms)})")
        return next(iter(arms.values()))
    if key not in arms:
        raise ValueError(f"arm {key!r} is not in this run ({', '.join(arms)})")
    return arms[key]
