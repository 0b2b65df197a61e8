"""The quickstart through Flower gives exactly the numbers main gave before the work on the round's overhead
(pipelined evaluation and checkpoint, caches): every metrics line, audit record, reconstruction image and the
final weights, bit for bit (tests/run_fingerprint.py says what is compared and how the reference was made)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from .flower_runs import in_sweep
from .run_fingerprint import fingerprint

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = in_sweep(yaml.safe_load((ROOT / "scenarios" / "quickstart.yaml").read_text()))
REFERENCE = Path(__file__).parent / "data" / "quickstart_fingerprint.json"


@pytest.mark.slow
def test_the_quickstart_is_bit_identical_to_main_before_the_overhead_work(sweep: dict[str, Path]) -> None:
    ours = fingerprint(sweep[QUICKSTART["name"]])
    reference = json.loads(REFERENCE.read_text())
    assert ours["metrics"] == reference["metrics"]
    assert ours["audit"] == reference["audit"]
    assert ours["images"] == reference["images"]
    assert ours["final_weights"] == reference["final_weights"]
