"""The accuracy part over seeds: final top-1 and curves per arm and seed, their interval, and the paired test.

A seed fixes the split and the initial weights for every arm, so each arm is compared with the undefended
ViT trained on the same split (the IID ViT, or the ViT under the same non-IID partitioning) seed by seed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..audit.summary import read_metrics
from ..federation.rundir import seed_dirs
from .settings import REFERENCE
from ..scoring.stats import paired_p, reading, t_interval

# Seed -> arm -> the arm's metrics.jsonl rows (one per round).
Curves = dict[int, dict[str, list[dict[str, Any]]]]


def accuracy_runs(part_dir: Path) -> dict[int, Path]:
    """Seed -> run directory of the accuracy part: ``seed-S`` folders, or the part itself (one seed)."""
    found = seed_dirs(part_dir)
    if found or not (part_dir / "scenario.yaml").is_file():
        return found
    arms = resolved_arms(part_dir)
    return {int(next(iter(arms.values()), {}).get("seed", 0)): part_dir}


def resolved_arms(run_dir: Path) -> dict[str, Any]:
    return yaml.safe_load((run_dir / "scenario.yaml").read_text()).get("arms") or {}


def read_curves(runs: dict[int, Path]) -> Curves:
    """Seed -> arm -> its rounds; an arm that has not finished all its rounds is left out (no partial run
    may pass for a final accuracy)."""
    curves: Curves = {}
    for seed, run_dir in runs.items():
        arms = resolved_arms(run_dir)
        rounds = {arm: read_metrics(run_dir, arm) for arm in arms}
        curves[seed] = {arm: rows for arm, rows in rounds.items()
                        if rows and rows[-1].get("round") == (arms[arm].get("training") or {}).get("rounds")}
    return curves


def finals(curves: Curves) -> dict[str, dict[int, float]]:
    """Arm -> seed -> top-1 after the last round (arms in the scenario's order; unfinished ones left out)."""
    out: dict[str, dict[int, float]] = {}
    for seed, arms in curves.items():
        for arm, rounds in arms.items():
            last = rounds[-1].get("accuracy")
            out.setdefault(arm, {})
            if last is not None:
                out[arm][seed] = float(last)
    return out


def undefended(arm: dict[str, Any]) -> bool:
    """A plain ViT arm: no MJP, no fixed position embedding, no DP, no pruning."""
    model, defence = arm.get("model") or {}, arm.get("defence") or {}
    return not str(model.get("name", "")).startswith("mjp_") and not model.get("fixed_pos_embed") \
        and not defence.get("dp") and not defence.get("prune")


def reference_of(name: str, arms: dict[str, Any], reference: str = REFERENCE) -> str | None:
    """The ViT an arm is compared with: ``reference`` when trained on the same partitioning, otherwise the
    undefended arm trained on the arm's partitioning (a non-IID MJP arm against the non-IID ViT)."""
    split = (arms[name].get("data") or {}).get("partitioning")
    candidates = [reference] + [a for a in arms if a != reference]
    for candidate in candidates:
        cfg = arms.get(candidate)
        if cfg is not None and undefended(cfg) and (cfg.get("data") or {}).get("partitioning") == split:
            return candidate
    return None


def accuracy_rows(by_arm: dict[str, dict[int, float]], arms: dict[str, Any], reference: str = REFERENCE
                  ) -> list[dict[str, Any]]:
    """One row per arm: seeds, mean and 95% t interval of the final top-1, paired p and reading vs its ViT."""
    rows = []
    for arm, by_seed in by_arm.items():
        if not by_seed:
            continue
        seeds = sorted(by_seed)
        mean, low, high = t_interval([by_seed[s] for s in seeds])
        ref = reference_of(arm, arms, reference) if arm in arms else None
        ref_seeds = by_arm.get(ref, {}) if ref else {}
        paired = [s for s in seeds if s in ref_seeds]
        values, ref_values = [by_seed[s] for s in paired], [ref_seeds[s] for s in paired]
        is_ref = arm == ref
        p = None if is_ref or not ref else paired_p(values, ref_values)
        words = reading(values, ref_values, is_ref) if ref else "no ViT on this split"
        if ref and not is_ref and ref != reference:
            words += f" (vs {ref})"
        rows.append({"arm": arm, "seeds": len(seeds), "mean": mean, "low": low, "high": high, "p": p,
                     "reading": words, "vs": ref, "per_seed": {str(s): by_seed[s] for s in seeds}})
    return rows
