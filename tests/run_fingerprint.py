"""Everything a run directory says about its numbers, without the clock: every metrics line and audit record
(less the seconds they took), and a hash of each saved tensor and image. Two runs with equal fingerprints
are bit-identical in what a user reads.

``python -m tests.run_fingerprint RUN_DIR > FILE`` writes one (tests/data/quickstart_fingerprint.json was made
by main at 7fd51e7, before the round's overhead work, from ``fedmjp simulate scenarios/quickstart.yaml``).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import torch

CLOCK = "seconds"


def _tensors_digest(path: Path) -> str:
    state = torch.load(path, map_location="cpu", weights_only=True)
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].contiguous().numpy().tobytes())
    return digest.hexdigest()


def _lines(path: Path) -> list[dict[str, Any]]:
    return [{k: v for k, v in json.loads(line).items() if k != CLOCK} for line in path.read_text().splitlines()]


def fingerprint(run_dir: Path) -> dict[str, Any]:
    arms = sorted(p.name for p in (run_dir / "arms").iterdir())
    return {
        "metrics": {arm: _lines(run_dir / "arms" / arm / "metrics.jsonl") for arm in arms},
        "final_weights": {arm: _tensors_digest(run_dir / "arms" / arm / "final_weights.pt") for arm in arms},
        # In the order a reader looks them up: arms of a sweep may run in another order.
        "audit": sorted(_lines(run_dir / "audit" / "records.jsonl"),
                        key=lambda r: (r["arm"], r["round"], r["partition_id"], r["attack"], r["source"])),
        "images": {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
                   for p in sorted((run_dir / "audit" / "images").rglob("*.png"))},
    }


if __name__ == "__main__":
    print(json.dumps(fingerprint(Path(sys.argv[1])), indent=1, sort_keys=True))
