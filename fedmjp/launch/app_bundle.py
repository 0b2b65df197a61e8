"""The Flower app's files, staged in a folder of their own for ``flwr run``.

``flwr run DIR`` walks every file under DIR (``os.walk`` in flwr/cli/utils.py) before its ``fab-include``
patterns pick the app's files, so run from the project root it walks a virtualenv kept there too, file by
file, on every run. The same files copied into a small folder make the same bundle at a fraction of the cost.
"""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]


def app_files(project: Path = PROJECT) -> list[str]:
    """The project's files the app bundle holds: pyproject.toml and what ``[tool.flwr.app] fab-include`` names."""
    config = tomllib.loads((project / "pyproject.toml").read_text())
    patterns = config["tool"]["flwr"]["app"]["fab-include"]
    found = {path.relative_to(project).as_posix() for pattern in patterns for path in project.glob(pattern)
             if path.is_file()}
    return sorted(found | {"pyproject.toml"})


def stage_app(into: Path, project: Path = PROJECT) -> Path:
    """Copy the app's files into ``into``/app (replacing an earlier copy); return that folder."""
    app = into / "app"
    shutil.rmtree(app, ignore_errors=True)
    for name in app_files(project):
        target = app / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(project / name, target)
    return app
