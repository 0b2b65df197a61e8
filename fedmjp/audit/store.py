"""The audit store: one record per round, arm, client and attack; append-only; owner-only.

Layout inside a run directory (reconstructions are private data: 0700 folders, 0600 files)::

    audit/records.jsonl                       one JSON record per line
    audit/images/ARM/rRRR-pPID-ATTACK.png     reconstruction (and -truth.png when opted in)

A record is appended with one ``write`` on an O_APPEND descriptor and fsynced, so a crash
can at worst leave a partial last line, which readers skip. Nothing is ever rewritten.
"""

from __future__ import annotations

import io
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torchvision.utils import save_image

from ..federation.rundir import append_jsonl, atomic_write, read_jsonl

DIR_MODE = 0o700
FILE_MODE = 0o600
# A guard record's attack when none of the guard's attacks judged the update.
GUARD_NO_JUDGE = "none"

# "scored", "not-applicable" (the attack cannot run here), "receipt-failed", "failed",
# "withheld" (a client guard kept the update back), "unjudged" (a client guard sent it unjudged),
# "fault" (a reply the round could not use).
RecordStatus = Literal["scored", "not-applicable", "receipt-failed", "failed", "withheld", "unjudged", "fault"]
# "server": what a curious server got; "client-guard": what the client measured itself; "fault": a reply
# the round could not use.
RecordSource = Literal["server", "client-guard", "fault"]


@dataclass
class AuditRecord:
    arm: str
    round: int
    partition_id: int
    attack: str
    status: RecordStatus
    source: RecordSource = "server"
    num_examples: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    # The same metrics for the attack's data-free starting image (the leakage baseline).
    baseline: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    threat_model: dict[str, Any] = field(default_factory=dict)
    # What the attack reported about itself (scalars of Reconstruction.info).
    info: dict[str, Any] = field(default_factory=dict)
    image: str | None = None
    truth_image: str | None = None
    labels_recovered: list[int] = field(default_factory=list)
    shuffled_steps: list[bool] = field(default_factory=list)
    reason: str = ""

    @property
    def leakage(self) -> float | None:
        """PSNR gained over the data-free baseline (dB); None when not scored."""
        if "psnr" not in self.metrics or "psnr" not in self.baseline:
            return None
        return self.metrics["psnr"] - self.baseline["psnr"]

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "leakage": self.leakage}


class AuditStore:
    """Reads and appends the records of one run directory."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.root = self.run_dir / "audit"
        self.records_path = self.root / "records.jsonl"

    def _ensure_dir(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
        inside = path.relative_to(self.run_dir)
        for parent in (inside, *inside.parents):
            if parent != Path("."):
                os.chmod(self.run_dir / parent, DIR_MODE)

    def append(self, record: AuditRecord) -> None:
        self._ensure_dir(self.root)
        append_jsonl(self.records_path, record.to_json(), FILE_MODE)

    def records(self) -> list[AuditRecord]:
        """Every complete record (``read_jsonl``'s rule: a torn last line is skipped, a bad complete one refused)."""
        found = []
        for data in read_jsonl(self.records_path):
            data.pop("leakage", None)
            found.append(AuditRecord(**data))
        return found

    def save_images(self, arm: str, name: str, images: torch.Tensor) -> str:
        """Write a (B, 3, H, W) batch in [0, 1] as one PNG row; return its path relative to the run."""
        folder = self.root / "images" / arm
        self._ensure_dir(folder)
        path = folder / f"{name}.png"
        atomic_write(path, png_bytes(images), FILE_MODE)
        return str(path.relative_to(self.run_dir))


def png_bytes(images: torch.Tensor) -> bytes:
    """A batch as one horizontal strip of PNG pixels."""
    buffer = io.BytesIO()
    save_image(images.detach().float().cpu(), buffer, format="PNG", nrow=len(images), padding=0)
    return buffer.getvalue()
