"""The Flower run config that carries a scenario's arms to the ServerApp and the ClientApps.

``fedmjp simulate`` and ``fedmjp deploy`` write it (``write_run_config``); the apps read it
(``arms_from_run_config``). One run may carry several arms: simulation runs consecutive arms that
share a federation as one Flower run, so the simulation engine, Ray and the apps start once, not
once per arm (about 20 s each). Every message the server sends names its arm (``fedmjp.protocol.ARM``
in its config record). A plain ``flwr run`` names a scenario file and one arm instead (``scenario``, ``arm``).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tomli_w

from ..errors import InputError
from ..scenario import Arm, load_scenario


def run_config(arms: list[Arm], run_dir: Path | str = "", resume: bool = False) -> dict[str, str | bool]:
    """The run config of these arms, run one after the other in one Flower run."""
    return {"arms-json": json.dumps({arm.name: arm.model_dump(mode="json") for arm in arms}),
            "run-dir": str(run_dir), "resume": resume}


def write_run_config(path: Path, arms: list[Arm], run_dir: Path, resume: bool = False) -> Path:
    """``run_config`` as a ``--run-config`` TOML file."""
    path.write_text(tomli_w.dumps(run_config(arms, run_dir, resume)))
    return path


@functools.lru_cache(maxsize=4)
def _arms(arms_json: str, scenario: str, arm_name: str) -> dict[str, Arm]:
    if arms_json:
        return {name: Arm.model_validate(arm) for name, arm in json.loads(arms_json).items()}
    arms = load_scenario(scenario).arms
    if arm_name not in arms:
        raise InputError(f"{scenario}: arm {arm_name!r} not found (have {', '.join(arms)})")
    return {arm_name: arms[arm_name]}


def arms_from_run_config(run_config: Mapping[str, Any]) -> dict[str, Arm]:
    """The arms of a run, in the order they run (read once per process; do not modify)."""
    return _arms(str(run_config.get("arms-json", "")), str(run_config.get("scenario", "")),
                 str(run_config.get("arm", "")))


def arm_named(run_config: Mapping[str, Any], name: str | None) -> Arm:
    """The arm a message names; a message that names none belongs to the run's only arm."""
    arms = arms_from_run_config(run_config)
    if name is None:
        if len(arms) != 1:
            raise ValueError(f"the message names no arm and the run carries {len(arms)} ({', '.join(arms)})")
        return next(iter(arms.values()))
    if name not in arms:
        raise ValueError(f"arm {name!r} is not in this run ({', '.join(arms)})")
    return arms[name]
