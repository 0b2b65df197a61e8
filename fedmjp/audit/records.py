"""The audit records a round writes: what each attack returned on a reply, scored by the client's receipt;
what the clients' guards reported; the replies the round could not use (faults).

Shared by the ServerApp's round (receipts over the grid) and the in-process rounds (receipts computed
beside the client), so both write the same records.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import torch

from ..protocol import ErrorCode, GuardReport, Scores
from ..scenario import Arm
from .adversary import Outcome
from .store import GUARD_NO_JUDGE, AuditRecord, AuditStore

# Which exchange of the round a fault happened in.
Phase = Literal["train", "evaluate"]


@dataclass
class Receipt:
    """What a client answered about one reply's reconstructions."""

    scored: dict[int, Scores]
    truth: torch.Tensor | None = None
    shuffled: list[bool] | None = None
    error: str = ""


def append_attack_records(store: AuditStore, arm: str, server_round: int, partition_id: int, num_examples: int,
                          outcomes: list[Outcome], receipt: Receipt | None, threat: dict[str, Any] | None = None
                          ) -> None:
    """One record per outcome; an attacked one carries its reconstruction's image and the receipt's scores
    (``receipt.scored`` is indexed by the outcome's place among the attacked ones), and ``threat`` beside the
    attack's threat model (what the server attacked, e.g. a SecAgg+ aggregate)."""
    truth_image = None
    if receipt is not None and receipt.truth is not None:
        truth_image = store.save_images(arm, f"r{server_round:03d}-p{partition_id}-truth", receipt.truth)
    reconstructed = [o for o in outcomes if o.status == "attacked"]
    for outcome in outcomes:
        record = AuditRecord(arm=arm, round=server_round, partition_id=partition_id, attack=outcome.spec.name,
                             status="scored" if outcome.status == "attacked" else outcome.status,
                             num_examples=num_examples, reason=outcome.reason, threat_model=dict(threat or {}))
        if outcome.status == "attacked":
            rec = outcome.reconstruction
            record.image = store.save_images(arm, f"r{server_round:03d}-p{partition_id}-{outcome.spec.name}",
                                             rec.images)
            record.truth_image = truth_image
            record.seconds = rec.seconds
            record.threat_model = {**rec.threat_model.to_dict(), **(threat or {})}
            record.info = scalar_info(rec.info)
            record.labels_recovered = [] if rec.labels is None else [int(v) for v in rec.labels]
            record.shuffled_steps = (receipt.shuffled or []) if receipt else []
            scored = receipt.scored.get(reconstructed.index(outcome)) if receipt else None
            if scored is None:
                record.status, record.reason = "receipt-failed", receipt.error if receipt else "receipt: no reply"
            else:
                record.metrics, record.baseline = scored
        store.append(record)


@dataclass(frozen=True)
class Fault:
    """A reply the round could not use: whose, why, and the code of a client's error reply (None for a
    missing or malformed reply, or an error of Flower's); ``guard``: a withheld update's guard report."""

    partition_id: int
    reason: str
    code: ErrorCode | None = None
    guard: GuardReport | None = None


def fault_tags(fault: Fault, phase: Phase) -> dict[str, str]:
    """What tells faults apart beside their reason: the error code's name, and an evaluation's phase."""
    tags = {} if fault.code is None else {"error": fault.code.name}
    return tags if phase == "train" else {**tags, "phase": phase}


def append_fault_records(store: AuditStore, arm: str, server_round: int, faults: Iterable[Fault],
                         phase: Phase = "train", planted: Collection[int] = ()) -> None:
    """One record per fault; a training fault says whether the server sent planted weights there
    (``info.planted``: a client's refusal reads as a planted model caught or an honest one refused)."""
    for fault in faults:
        info: dict[str, Any] = {"planted": fault.partition_id in planted} if phase == "train" else {}
        store.append(AuditRecord(arm=arm, round=server_round, partition_id=fault.partition_id, attack="none",
                                 status="fault", source="fault", reason=fault.reason,
                                 info={**info, **fault_tags(fault, phase)}))


def guard_record(arm: Arm, server_round: int, partition_id: int, report: GuardReport | None,
                 num_examples: int = 0, withheld: str | None = None) -> AuditRecord:
    """The audit record of what a client guard reported: for a reply it let out (``withheld`` None), judged
    (status "scored", the judge's name) or sent unjudged (status "unjudged"), ``reason`` what it did with it
    (a ``GUARD_ACTIONS`` entry); for an update it withheld, status "withheld", ``reason`` the fault's words
    (and the judge when its report says who judged)."""
    judge = None if report is None else report.judge
    status = "withheld" if withheld is not None else "unjudged" if judge is None else "scored"
    record = AuditRecord(arm=arm.name, round=server_round, partition_id=partition_id, attack=GUARD_NO_JUDGE,
                         status=status, source="client-guard", num_examples=num_examples,
                         seconds=report.seconds if report else 0.0,
                         reason=withheld if withheld is not None else report.action)
    if judge is not None:
        record.attack = arm.guard.chain()[judge].name
        record.metrics = {} if report.psnr is None else {"psnr": report.psnr}
        record.info = {"fallback": judge > 0}
    return record


def append_guard_records(store: AuditStore, arm: Arm, server_round: int,
                         sent: Iterable[tuple[int, int, GuardReport]], faults: Iterable[Fault]) -> None:
    """What each client's guard measured and allowed out: a record per reply that left a guard (``sent``:
    partition id, examples, its report) and per update a guard withheld (the faults with that code)."""
    for partition_id, num_examples, report in sent:
        store.append(guard_record(arm, server_round, partition_id, report, num_examples))
    for fault in faults:
        if fault.code == ErrorCode.GUARD_WITHHELD:
            store.append(guard_record(arm, server_round, fault.partition_id, fault.guard, withheld=fault.reason))


def scalar_info(info: dict) -> dict[str, float | str | bool]:
    """What an attack reported about itself (e.g. adaptive's ``dal_head_residual``), kept where it fits
    a JSON record: numbers, flags and words, not tensors."""
    return {k: v if isinstance(v, (bool, str)) else float(v) for k, v in info.items()
            if isinstance(v, (bool, int, float, str))}
