"""The client-side guard: before its update leaves, the client attacks it itself.

The client knows everything (weights, its update, its batch), so it is the strongest auditor. It tries the
guard's attack, then each fallback (``Guard.chain()``); the first that applies to what it sends judges the
update, and above ``max_psnr`` the update is withheld or noised. An update no attack judged is withheld or
sent as ``on_unjudged`` says: a privacy tool does not wave updates through unseen.

What the guard did reaches the server as numbers in the reply's metrics, or, for a withheld update, as the
payload of its error reply (``withheld_reply``): both are a ``fedmjp.protocol.GuardReport``, which the server
turns back into audit records (``fedmjp.audit.records.append_guard_records``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from flwr.app import Error

from ..attacks import build_attack
from ..scenario import Arm, Guard
from ..protocol import GuardAction, GuardReport, LocalSettings, withheld_error
from .adversary import observation, run_attack
from .receipt import score

WITHHELD = "withheld by client guard"


@dataclass
class Verdict:
    action: GuardAction
    psnr: float | None
    seconds: float
    # Index in ``Guard.chain()`` of the attack that judged the update; None when none did.
    judge: int | None = None
    # Why none judged: each attack's outcome.
    reason: str = ""

    @property
    def report(self) -> GuardReport:
        """What the server is told (never why no attack judged: that is in a withheld update's words)."""
        return GuardReport(self.action, self.seconds, self.judge, self.psnr)


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


def withheld_reply(verdict: Verdict, guard: Guard) -> Error:
    """The error reply of a withheld update: in words, who judged it and the PSNR, or that none could and why;
    for the server, the verdict's report."""
    if verdict.judge is None:
        text = f"{WITHHELD}: unjudged ({verdict.reason})"
    else:
        name = guard.chain()[verdict.judge].name
        fallback = f" (fallback {verdict.judge})" if verdict.judge else ""
        text = f"{WITHHELD}: {name}{fallback} PSNR {verdict.psnr:.1f} dB > {guard.max_psnr}"
    return withheld_error(verdict.report, text)
