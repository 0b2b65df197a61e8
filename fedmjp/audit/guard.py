"""The client-side guard: before its update leaves, the client attacks it itself.

The client knows everything (weights, its update, its batch), so it is the strongest auditor. It tries the
guard's attack, then each fallback (``Guard.chain()``); the first that applies to what it sends judges the
update, and above ``max_psnr`` the update is withheld or noised. An update no attack judged is withheld or
sent as ``on_unjudged`` says: a privacy tool does not wave updates through unseen.

What the guard did reaches the server as numbers in the reply's metrics (``verdict_metrics``) or, for a
withheld update, as the error reply's reason (``withheld_reason``); the server turns both back into audit
records here (``guard_record``, ``withheld_record``), so the encoding lives in one place.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from ..attacks import build_attack
from ..scenario import Arm, Guard
from ..federation.train import LocalSettings
from .adversary import observation, run_attack
from .receipt import score
from .store import GUARD_ACTIONS, GUARD_NO_JUDGE, AuditRecord

SOURCE = "client-guard"
# ``guard.attack`` of an update no attack judged (else the judge's index in ``Guard.chain()``).
UNJUDGED = -1
WITHHELD = "withheld by client guard"
# "withheld by client guard: ig (fallback 2) PSNR 31.4 dB > 30.0"; the configured attack has no "(fallback i)".
_JUDGED = re.compile(rf"{WITHHELD}: (?P<attack>\S+)(?: \(fallback (?P<fallback>\d+)\))? PSNR (?P<psnr>\S+) dB")


@dataclass
class Verdict:
    action: str  # one of GUARD_ACTIONS
    psnr: float | None
    seconds: float
    # Index in ``Guard.chain()`` of the attack that judged the update; None when none did.
    judge: int | None = None
    # Why none judged: each attack's outcome.
    reason: str = ""


def inspect(arm: Arm, weights: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor], truth: torch.Tensor,
            labels: torch.Tensor, shuffled: torch.Tensor | None, patch: int, server_round: int,
            settings: LocalSettings | None) -> Verdict:
    """Attack our own update with the first of the guard's attacks that applies and decide what may leave
    (``settings``: how we trained, as the reply reports it; a FedAvg update is replayed with them)."""
    guard = arm.guard
    obs = observation(arm, weights, tensors, len(truth), server_round, settings)
    start = time.perf_counter()
    misses = []
    for index, spec in enumerate(guard.chain()):
        outcome = run_attack(spec, build_attack(spec.name, **spec.options), obs)
        if outcome.status == "attacked":
            rec = outcome.reconstruction
            psnr = score(rec.images, truth, patch, shuffled, labels, rec.labels)["psnr"]
            action = "pass" if psnr <= guard.max_psnr else guard.action
            return Verdict(action, psnr, time.perf_counter() - start, judge=index)
        misses.append(f"{spec.name} {outcome.status}: {outcome.reason}")
    action = "pass" if guard.on_unjudged == "send" else "withhold"
    return Verdict(action, None, time.perf_counter() - start, reason="; ".join(misses))


def add_noise(tensors: dict[str, torch.Tensor], scale: float, seed: int) -> dict[str, torch.Tensor]:
    """Gaussian noise with std ``scale`` times each tensor's RMS."""
    generator = torch.Generator().manual_seed(seed)
    noised = {}
    for name, t in tensors.items():
        rms = t.float().pow(2).mean().sqrt()
        noised[name] = t + scale * rms * torch.randn(t.shape, generator=generator, dtype=t.dtype)
    return noised


# --------------------------------------------------------------------------- what travels, both ways


def verdict_metrics(verdict: Verdict) -> dict[str, float]:
    """The reply's guard metrics (numbers only): the action, the seconds, the judge or UNJUDGED, the PSNR."""
    metrics = {"guard.action": GUARD_ACTIONS.index(verdict.action), "guard.seconds": verdict.seconds,
               "guard.attack": UNJUDGED if verdict.judge is None else verdict.judge}
    if verdict.psnr is not None:
        metrics["guard.psnr"] = verdict.psnr
    return metrics


def withheld_reason(verdict: Verdict, guard: Guard) -> str:
    """The error reason of a withheld update: who judged it and the PSNR, or that none could and why."""
    if verdict.judge is None:
        return f"{WITHHELD}: unjudged ({verdict.reason})"
    name = guard.chain()[verdict.judge].name
    fallback = f" (fallback {verdict.judge})" if verdict.judge else ""
    return f"{WITHHELD}: {name}{fallback} PSNR {verdict.psnr:.1f} dB > {guard.max_psnr}"


def guard_record(arm: Arm, server_round: int, partition_id: int, num_examples: int,
                 metrics: Mapping[str, float]) -> AuditRecord:
    """The audit record of a reply that left the guard: judged (status "scored", the judge's name) or sent
    unjudged (status "unjudged"); ``reason`` is what the guard did with it (a GUARD_ACTIONS entry)."""
    judge = int(metrics["guard.attack"])
    record = AuditRecord(arm=arm.name, round=server_round, partition_id=partition_id, attack=GUARD_NO_JUDGE,
                         status="unjudged", source=SOURCE, num_examples=num_examples,
                         seconds=float(metrics["guard.seconds"]), reason=GUARD_ACTIONS[int(metrics["guard.action"])])
    if judge != UNJUDGED:
        record.attack, record.status = arm.guard.chain()[judge].name, "scored"
        record.metrics = {"psnr": float(metrics["guard.psnr"])}
        record.info = {"fallback": judge > 0}
    return record


def withheld_record(arm: Arm, server_round: int, partition_id: int, reason: str) -> AuditRecord:
    """The audit record of a withheld update, read from its error reason (``withheld_reason``)."""
    record = AuditRecord(arm=arm.name, round=server_round, partition_id=partition_id, attack=GUARD_NO_JUDGE,
                         status="withheld", source=SOURCE, reason=reason)
    if judged := _JUDGED.search(reason):
        record.attack = judged["attack"]
        record.metrics = {"psnr": float(judged["psnr"])}
        record.info = {"fallback": judged["fallback"] is not None}
    return record
