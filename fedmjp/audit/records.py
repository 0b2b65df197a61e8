"""The audit records of one attacked reply: what each attack returned, scored by the client's receipt.

Shared by the ServerApp's round (receipts over the grid) and the in-process rounds (receipts computed
beside the client), so both write the same records.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .adversary import Outcome
from .store import AuditRecord, AuditStore


@dataclass
class Receipt:
    """What a client answered about one reply's reconstructions."""

    scored: dict[int, tuple[dict[str, float], dict[str, float]]]
    truth: torch.Tensor | None = None
    shuffled: list[bool] | None = None
    error: str = ""


def append_attack_records(store: AuditStore, arm: str, server_round: int, partition_id: int, num_examples: int,
                          outcomes: list[Outcome], receipt: Receipt | None) -> None:
    """One record per outcome; an attacked one carries its reconstruction's image and the receipt's scores
    (``receipt.scored`` is indexed by the outcome's place among the attacked ones)."""
    truth_image = None
    if receipt is not None and receipt.truth is not None:
        truth_image = store.save_images(arm, f"r{server_round:03d}-p{partition_id}-truth", receipt.truth)
    reconstructed = [o for o in outcomes if o.status == "attacked"]
    for outcome in outcomes:
        record = AuditRecord(arm=arm, round=server_round, partition_id=partition_id, attack=outcome.spec.name,
                             status=outcome.status, num_examples=num_examples, reason=outcome.reason)
        if outcome.status == "attacked":
            rec = outcome.reconstruction
            record.image = store.save_images(arm, f"r{server_round:03d}-p{partition_id}-{outcome.spec.name}",
                                             rec.images)
            record.truth_image = truth_image
            record.seconds = rec.seconds
            record.threat_model = rec.threat_model.to_dict()
            record.info = scalar_info(rec.info)
            record.labels_recovered = [] if rec.labels is None else [int(v) for v in rec.labels]
            record.shuffled_steps = (receipt.shuffled or []) if receipt else []
            scored = receipt.scored.get(reconstructed.index(outcome)) if receipt else None
            if scored is None:
                record.status, record.reason = "receipt-failed", receipt.error if receipt else "receipt: no reply"
            else:
                record.status = "scored"
                record.metrics, record.baseline = scored
        store.append(record)


def scalar_info(info: dict) -> dict[str, float | str | bool]:
    """What an attack reported about itself (e.g. adaptive's ``dal_head_residual``), kept where it fits
    a JSON record: numbers, flags and words, not tensors."""
    return {k: v if isinstance(v, (bool, str)) else float(v) for k, v in info.items()
            if isinstance(v, (bool, int, float, str))}
