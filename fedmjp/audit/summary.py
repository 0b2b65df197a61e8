"""The audit summary: the records of a run directory, aggregated per arm and attack.

Only what a curious server obtained counts as leakage: records with source ``"server"`` and status
``"scored"``. What clients measured themselves (source ``"client-guard"``) is summarised apart, under
``"guard"``, and what the clients' model check refused under ``"model_check"``. The summary is JSON-ready
and NaN-free: a statistic without finite values is left out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..errors import InputError
from ..federation.rundir import arm_dir, read_jsonl
from ..protocol import ErrorCode
from .store import GUARD_NO_JUDGE, AuditRecord, AuditStore, RecordSource, RecordStatus

SERVER: RecordSource = "server"
GUARD: RecordSource = "client-guard"
FAULT: RecordSource = "fault"
SCORED: RecordStatus = "scored"
NOT_APPLICABLE: RecordStatus = "not-applicable"
FAILED: tuple[RecordStatus, ...] = ("failed", "receipt-failed")
WITHHELD: RecordStatus = "withheld"
# A guard record of an update sent without judgement (older run directories recorded it as not-applicable).
SENT_UNJUDGED: tuple[RecordStatus, ...] = ("unjudged", NOT_APPLICABLE)
# Higher is more leakage for these, so their maximum is the worst case over clients and rounds.
WORST_CASE = ("psnr", "ssim", "patch_psnr")


def summarize(run_dir: Path) -> dict[str, Any]:
    """Per arm: final test accuracy, rounds, and per attack the leakage statistics (see module doc)."""
    run_dir = Path(run_dir)
    scenario = read_scenario(run_dir)
    records = read_records(run_dir)
    arms: dict[str, Any] = {}
    for arm in arm_names(run_dir, scenario, records):
        rounds = read_metrics(run_dir, arm)
        mine = [r for r in records if r.arm == arm]
        entry: dict[str, Any] = {
            "accuracy_final": _finite(rounds[-1].get("accuracy")) if rounds else None,
            "rounds": len(rounds),
            "attacks": attack_stats([r for r in mine if r.source == SERVER]),
        }
        # Under SecAgg+ the server attacked sums: each record is one client's receipt for one.
        if through := [r for r in mine if r.source == SERVER and r.threat_model.get("aggregate")]:
            entry["secure_aggregation"] = {"records": len(through),
                                           "clients": sorted({int(r.threat_model["clients"]) for r in through})}
        guard = [r for r in mine if r.source == GUARD]
        if guard:
            entry["guard"] = guard_stats(guard)
        refused = [r for r in mine if r.source == FAULT and r.info.get("error") == ErrorCode.MODEL_REFUSED.name]
        if refused or model_check_on(scenario, arm):
            entry["model_check"] = model_check_stats(refused, rounds)
        arms[arm] = entry
    return {"run_dir": str(run_dir), "scenario": scenario.get("name"), "arms": arms}


def leakage_by_round(records: Iterable[AuditRecord], arm: str, attack: str) -> list[tuple[int, float]]:
    """(round, mean PSNR over the scored server records of that round), in round order."""
    by_round: dict[int, list[float]] = {}
    for r in records:
        if r.arm == arm and r.attack == attack and r.source == SERVER and r.status == SCORED:
            value = _finite(r.metrics.get("psnr"))
            if value is not None:
                by_round.setdefault(r.round, []).append(value)
    return [(rnd, float(np.mean(values))) for rnd, values in sorted(by_round.items())]


# --------------------------------------------------------------------------- reading the run directory


def read_scenario(run_dir: Path) -> dict[str, Any]:
    """The resolved scenario as a mapping; InputError when this is no run directory."""
    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: no such directory")
    path = run_dir / "scenario.yaml"
    if not path.is_file():
        raise InputError(f"{run_dir}: not a fedmjp run directory (no scenario.yaml)")
    try:
        scenario = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML ({_one_line(exc)})") from None
    if not isinstance(scenario, dict):
        raise InputError(f"{path}: not a scenario mapping")
    return scenario


def read_metrics(run_dir: Path, arm: str) -> list[dict[str, Any]]:
    """The arm's per-round metrics in round order (``read_jsonl``'s rule: a torn last line is skipped, any
    other bad line refused rather than reporting numbers from a damaged run)."""
    path = arm_dir(run_dir, arm) / "metrics.jsonl"
    rows = read_jsonl(path)
    for number, row in enumerate(rows, start=1):
        if not isinstance(row.get("round"), int):
            raise InputError(f"{path}: record {number} is not a round record (no integer 'round')")
    return sorted(rows, key=lambda row: row["round"])


def read_records(run_dir: Path) -> list[AuditRecord]:
    """Every complete audit record (a torn last line is skipped, a bad complete one refused)."""
    store = AuditStore(run_dir)
    try:
        return store.records()
    except TypeError as exc:  # a line with fields this version of AuditRecord does not know
        raise InputError(f"{store.records_path}: a record does not match this fedmjp version ({exc})") from None


def model_check_on(scenario: dict[str, Any], arm: str) -> bool:
    """Whether the resolved scenario turns the client model check on for ``arm``."""
    arms = scenario.get("arms")
    settings = arms.get(arm) if isinstance(arms, dict) else None
    guard = settings.get("guard") if isinstance(settings, dict) else None
    return isinstance(guard, dict) and guard.get("model_check") is True


def arm_names(run_dir: Path, scenario: dict[str, Any], records: list[AuditRecord]) -> list[str]:
    """The scenario's arms in its order, then any arm found only on disk or in the records."""
    names = list(scenario.get("arms") or {}) if isinstance(scenario.get("arms"), dict) else []
    arms_root = run_dir / "arms"
    on_disk = sorted(p.name for p in arms_root.iterdir() if p.is_dir()) if arms_root.is_dir() else []
    return list(dict.fromkeys([*map(str, names), *on_disk, *sorted({r.arm for r in records})]))


# --------------------------------------------------------------------------- statistics


def attack_stats(records: list[AuditRecord]) -> dict[str, dict[str, Any]]:
    """Per attack: statistics of the scored records, plus how many were not applicable or failed."""
    attacks = list(dict.fromkeys(r.attack for r in records))
    return {attack: _one_attack([r for r in records if r.attack == attack]) for attack in attacks}


def _one_attack(records: list[AuditRecord]) -> dict[str, Any]:
    scored = [r for r in records if r.status == SCORED]
    stats = metric_stats(scored)
    stats["count"] = len(scored)
    stats["not_applicable"] = sum(r.status == NOT_APPLICABLE for r in records)
    stats["failed"] = sum(r.status in FAILED for r in records)
    seconds = _mean([r.seconds for r in scored])
    if seconds is not None:
        stats["seconds_mean"] = seconds
    return stats


def metric_stats(records: list[AuditRecord]) -> dict[str, float]:
    """``KEY_mean`` for every metric recorded, ``KEY_max`` for the worst-case ones, ``psnr_std``, and
    ``leakage_mean`` (PSNR over the data-free baseline) where a baseline was recorded."""
    keys = list(dict.fromkeys(key for r in records for key in r.metrics))
    stats: dict[str, float] = {}
    for key in keys:
        values = _finite_values(r.metrics.get(key) for r in records)
        if not values:
            continue
        stats[f"{key}_mean"] = float(np.mean(values))
        if key in WORST_CASE:
            stats[f"{key}_max"] = float(np.max(values))
        if key == "psnr":
            stats["psnr_std"] = float(np.std(values))  # population std: the records are all there is
    leakage = _mean([r.leakage for r in records])
    if leakage is not None:
        stats["leakage_mean"] = leakage
    return stats


def guard_stats(records: list[AuditRecord]) -> dict[str, Any]:
    """Client-side guard records: how many; the updates judged (by a fallback among them), withheld, noised,
    and those no attack judged, withheld or sent; per attack the client's own leakage measurements."""
    judged = [r for r in records if r.attack != GUARD_NO_JUDGE and r.status in (SCORED, WITHHELD)]
    return {
        "count": len(records),
        "judged": len(judged),
        "judged_by_fallback": sum(r.info.get("fallback") is True for r in judged),
        "withheld": sum(r.status == WITHHELD for r in records),
        "withheld_unjudged": sum(r.status == WITHHELD and r.attack == GUARD_NO_JUDGE for r in records),
        "sent_unjudged": sum(r.status in SENT_UNJUDGED for r in records),
        "noised": sum(r.reason == "noise" for r in records),
        "attacks": {attack: metric_stats([r for r in judged if r.attack == attack])
                    for attack in dict.fromkeys(r.attack for r in judged)},
    }


def model_check_stats(refused: list[AuditRecord], rounds: list[dict[str, Any]]) -> dict[str, int]:
    """The client model check: models checked (each refused, or trained on and so a usable reply), and the
    refusals split by whether the server had planted that model. A refusal recorded before the server
    marked planted faults counts in ``refused`` only."""
    return {
        "checked": len(refused) + sum(int(row.get("clients", 0)) for row in rounds),
        "refused": len(refused),
        "refused_planted": sum(r.info.get("planted") is True for r in refused),
        "refused_honest": sum(r.info.get("planted") is False for r in refused),
    }


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _finite_values(values: Iterable[Any]) -> list[float]:
    return [v for v in map(_finite, values) if v is not None]


def _mean(values: Iterable[Any]) -> float | None:
    finite = _finite_values(values)
    return float(np.mean(finite)) if finite else None


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())
