"""Is the grid's optimisation attacker converged? A sample of its cells run again with four times the steps.

A weak attacker reads as a strong defence, so a figure from an optimisation attack counts only with its budget
and a check that more budget would not change it. The check re-runs sampled cells of the grid (the same seed,
clients and replies: only the attacks' steps differ, ``FACTOR`` times) into ``runs/convergence/CELL``; an
attack whose matched PSNR moves by less than ``PSNR_MOVE`` and SSIM by less than ``SSIM_MOVE`` is converged
there. Every other cell of the grid is a lower bound (not checked, or still rising at 4x), or not converged
(lower at 4x: the optimisation is not stable there).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..audit.summary import summarize
from .accuracy import resolved_arms
from .provenance import read_json
from .realism import GRID, Cell, Progress, run_realism

PART = "convergence"
FACTOR = 4
PSNR_MOVE = 1.0  # dB
SSIM_MOVE = 0.02
# The cells checked: what 2 cores afford at four times the full setting's budget (FedSGD at init, where the
# grid's "not recognisable" readings start), on the ViT and the MJP arm the results lead with.
SAMPLE = {"quick": (Cell("init", "fedsgd", 1),),
          "full": (Cell("init", "fedsgd", 1), Cell("init", "fedsgd", 4))}
SAMPLE_ARMS = ("vit", "mjp-0.25")
CLOSED_FORM = "closed form"
CONVERGED = "converged"
RISING = "lower bound: still rising at 4x"
FALLING = "not converged: lower at 4x"
NOT_CHECKED = "lower bound: not checked at 4x"


def run_convergence(path: Path, out: Path, setting: str, overrides: list[str], arms: list[str] | None,
                    seed: int | None, progress: Progress = lambda *_: None) -> Path:
    """The sampled cells with ``FACTOR`` times every attack's steps, into ``out/runs/convergence``."""
    chosen = [a for a in SAMPLE_ARMS if arms is None or a in arms]
    return run_realism(path, out, setting, overrides, chosen, seed, progress, part=PART, only=SAMPLE[setting],
                       step_factor=FACTOR)


def read_convergence(out: Path) -> list[dict[str, Any]]:
    """Per checked cell, arm and optimisation attack: steps, matched PSNR and SSIM at the grid's budget and at
    ``FACTOR`` times it, and whether it converged (empty when the part did not run)."""
    checked = out / "runs" / PART
    grid = read_json(checked / GRID)
    rows = []
    for name in grid.get("cells", []):
        published = out / "runs" / "realism" / name
        if not (published / "scenario.yaml").is_file():
            continue
        before, after = summarize(published)["arms"], summarize(checked / name)["arms"]
        steps = {arm: attack_steps(entry) for arm, entry in resolved_arms(published).items()}
        larger = {arm: attack_steps(entry) for arm, entry in resolved_arms(checked / name).items()}
        for arm, entry in after.items():
            for attack, stats in entry["attacks"].items():
                old = ((before.get(arm) or {}).get("attacks") or {}).get(attack) or {}
                if attack not in larger[arm] or attack not in steps.get(arm, {}) or "psnr_mean" not in stats \
                        or "psnr_mean" not in old:
                    continue
                rows.append({"cell": name, "arm": arm, "attack": attack, "steps": steps[arm][attack],
                             "steps_larger": larger[arm][attack], "psnr": old["psnr_mean"],
                             "psnr_larger": stats["psnr_mean"], "ssim": old["ssim_mean"],
                             "ssim_larger": stats["ssim_mean"],
                             "converged": converged(stats["psnr_mean"] - old["psnr_mean"],
                                                    stats["ssim_mean"] - old["ssim_mean"])})
    return rows


def converged(psnr_moved: float, ssim_moved: float) -> bool:
    """Whether ``FACTOR`` times the steps moved matched PSNR and SSIM by less than the bounds."""
    return abs(psnr_moved) < PSNR_MOVE and abs(ssim_moved) < SSIM_MOVE


def attack_steps(arm: dict[str, Any]) -> dict[str, int]:
    """attack -> steps, for the arm's attacks that take steps."""
    return {spec["name"]: spec["options"]["steps"] for spec in (arm.get("audit") or {}).get("attacks", [])
            if "steps" in (spec.get("options") or {})}


def budget_reading(checks: list[dict[str, Any]], cell: str, arm: str, attack: str | None,
                   takes_steps: bool) -> str:
    """What a grid row's attack budget supports: closed form, converged at 4x, or a lower bound."""
    if attack is None:
        return "–"
    if not takes_steps:
        return CLOSED_FORM
    found = next((c for c in checks if (c["cell"], c["arm"], c["attack"]) == (cell, arm, attack)), None)
    if found is None:
        return NOT_CHECKED
    return f"{verdict(found)} ({FACTOR}x: {found['psnr_larger'] - found['psnr']:+.2f} dB, SSIM " \
           f"{found['ssim_larger'] - found['ssim']:+.3f})"


def verdict(check: dict[str, Any]) -> str:
    """Converged, rising (the published figure is a lower bound) or falling at the larger budget."""
    if check["converged"]:
        return CONVERGED
    return RISING if check["psnr_larger"] >= check["psnr"] else FALLING
