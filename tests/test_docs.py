"""The documentation: the scenario reference is what the schema generates, and the site builds with
``mkdocs build --strict`` (a broken link or reference fails)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import get_args

from pydantic import BaseModel

from fedmjp.scenario import Arm
from fedmjp.scenario_reference import reference

ROOT = Path(__file__).resolve().parent.parent


def test_the_scenario_reference_is_what_the_schema_generates() -> None:
    assert (ROOT / "docs" / "scenario.md").read_text() == reference(), \
        "docs/scenario.md is stale: run make docs (python -m fedmjp.scenario_reference docs/scenario.md)"


def test_the_scenario_reference_documents_every_key() -> None:
    text = reference()

    def keys(model: type, path: str) -> list[str]:
        found = []
        for key, field in model.model_fields.items():
            assert field.description, f"{path}{key} has no docstring"
            found.append(f"| `{key}` |")
            for inner in (field.annotation, *get_args(field.annotation)):  # a section, or an optional one
                if isinstance(inner, type) and issubclass(inner, BaseModel) and inner.__name__ != "AttackSpec":
                    found += keys(inner, f"{path}{key}.")
        return found

    rows = keys(Arm, "")
    assert len(rows) > 80 and all(row in text for row in rows)
    assert "## `defence.dp`" in text and "| `epsilon` | float (> 0) | required |" in text


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent))
    assert mkdocs, "mkdocs is a dev dependency (pip install -e '.[dev]')"
    done = subprocess.run([mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "site" / "scenario" / "index.html").is_file()
