"""Is the optimisation attacker converged? The privacy part, the secure-aggregation part's smallest sums, and a
sample of the grid's cells, run again with four times every attack's budget.

A weak attacker reads as a strong defence, so a figure from an optimisation attack counts only with its budget
and a check that more budget would not change it. The check runs the privacy part again through Flower (its
seed, so the same clients and replies: only the attacks' budgets differ, ``FACTOR`` times) into
``runs/convergence/privacy``, the secure part's passive cells of ``SECURE_CLIENTS`` clients a round into
``runs/convergence/secure``, and sampled cells of the grid into ``runs/convergence/CELL``; an attack whose
matched PSNR moves by less than ``PSNR_MOVE`` and SSIM by less than ``SSIM_MOVE`` is converged there. Every
other figure is a lower bound (not checked, or still rising at 4x), or not converged (lower at 4x: the
optimisation is not stable there). The budget is the attack's steps, and the adaptive attack's refinement rounds
on one example (:mod:`.budgets`). A row of an arm's strongest attack is a lower bound too while another of its
attacks is still rising or was not checked (:func:`strongest_reading`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..audit.summary import summarize
from ..federation.rundir import arm_finished
from ..scenario import AttackSpec, Scenario
from ..scoring.reading import EXACT_DB
from .accuracy import resolved_arms
from .budgets import (CLOSED_FORM, CONVERGED, FALLING, LOWER_BOUND, NOT_CHECKED, RISING, attack_budgets,
                      attacks_one_example, scaled_budget)
from .provenance import read_json
from .realism import GRID, Cell, Progress, run_realism
from .secure import ATTACKED, PART_DIR, Grid, cell_name, ran_grid, secure_scenario
from .settings import load_part

PART = "convergence"
PRIVACY = "privacy"  # the privacy part's check: runs/convergence/privacy, against runs/privacy
SECURE = "secure"  # the secure part's check: runs/convergence/secure, against runs/secure/attacks
FACTOR = 4
PSNR_MOVE = 1.0  # dB
SSIM_MOVE = 0.02
# The grid's cells checked: what 2 cores afford at four times the full setting's budget (FedSGD at init, where
# the grid's "not recognisable" readings start), on the ViT and the MJP arm the results lead with.
SAMPLE = {"quick": (Cell("init", "fedsgd", 1),),
          "full": (Cell("init", "fedsgd", 1), Cell("init", "fedsgd", 4))}
SAMPLE_ARMS = ("vit", "mjp-0.25")
# The privacy part's arms checked: every one in the full setting (the published one); the quick setting, a
# preview, checks the sampled arms only (all of them at 4x would double its minutes).
PRIVACY_SAMPLE = {"quick": SAMPLE_ARMS, "full": None}
# The secure part's passive cells checked (every arm and batch size): one reply, and the smallest sum, where a
# "SecAgg+ stops it" reading is likeliest to be the attacker's weakness. Larger sums are many times the images to
# reconstruct, so their 4x budget is hours on 2 cores.
SECURE_CLIENTS = (1, 2)


def run_convergence(path: Path, out: Path, setting: str, overrides: list[str], arms: list[str] | None,
                    seed: int | None, progress: Progress = lambda *_: None, ray_address: str | None = None) -> Path:
    """With ``FACTOR`` times every attack's budget, into ``out/runs/convergence``: the privacy part's arms of
    ``PRIVACY_SAMPLE`` and the secure part's sampled cells (each when its part has run into ``out``), through
    Flower as one sweep, then the grid's sampled cells."""
    from ..launch.simulate import Planned, simulate_runs

    planned: list[Planned] = []
    sample = PRIVACY_SAMPLE[setting]
    checked = arms if sample is None else [a for a in sample if arms is None or a in arms]
    if (out / "runs" / PRIVACY / "scenario.yaml").is_file() and checked != []:
        planned.append(Planned(load_part(path, setting, PRIVACY, overrides, checked), out / "runs" / PART / PRIVACY))
    ran = ran_grid(out)
    if ran is not None and ran[0].arms:
        planned.append(Planned(secure_check(path, setting, overrides, ran[0]), out / "runs" / PART / SECURE))
    if planned:
        planned = [Planned(larger_budget(p.scenario if seed is None else p.scenario.with_seed(seed), FACTOR), p.out)
                   for p in planned]
        simulate_runs(planned, lambda run, arm, done, total: progress(f"{planned[run].out.name}: {arm}", done, total),
                      ray_address)
    chosen = [a for a in SAMPLE_ARMS if arms is None or a in arms]
    return run_realism(path, out, setting, overrides, chosen, seed,
                       lambda _cell, done, total: progress("cells", done, total), part=PART, only=SAMPLE[setting],
                       budget_factor=FACTOR)


def secure_check(path: Path, setting: str, overrides: list[str], grid: Grid) -> Scenario:
    """The secure part's passive cells of ``SECURE_CLIENTS`` clients a round, as the part ran them (its whole
    grid's federation, so the same clients and replies), at the part's budget."""
    part = secure_scenario(path, setting, overrides, grid)
    cells = {cell_name(*cell) for cell in grid.cells() if cell[1] in SECURE_CLIENTS and cell[3] == "passive"}
    return part.model_copy(update={"arms": {name: arm for name, arm in part.arms.items() if name in cells}})


def larger_budget(scenario: Scenario, factor: int) -> Scenario:
    """The scenario with ``factor`` times every arm's attack budgets."""
    arms = {name: arm.model_copy(update={"audit": arm.audit.model_copy(update={"attacks": [
        AttackSpec.model_validate(scaled_budget(spec.model_dump(), factor, attacks_one_example(
            arm.model_dump(mode="json")))) for spec in arm.audit.attacks]})})
        for name, arm in scenario.arms.items()}
    return scenario.model_copy(update={"arms": arms})


def read_convergence(out: Path) -> list[dict[str, Any]]:
    """Per checked part or cell, arm and optimisation attack: the budget, matched PSNR and SSIM as published and
    at ``FACTOR`` times the budget, and whether it converged (empty when the part did not run)."""
    checked = out / "runs" / PART
    pairs = [(PRIVACY, out / "runs" / PRIVACY, checked / PRIVACY),
             (SECURE, out / PART_DIR / ATTACKED, checked / SECURE)]
    pairs += [(name, out / "runs" / "realism" / name, checked / name) for name in read_json(checked / GRID).get("cells", [])]
    rows = []
    for name, published, larger in pairs:
        if (published / "scenario.yaml").is_file() and (larger / "scenario.yaml").is_file():
            rows += _checks(name, published, larger)
    return rows


def _checks(name: str, published: Path, larger: Path) -> list[dict[str, Any]]:
    """The rows of one check: each arm's optimisation attacks scored in both run directories (arms the check
    finished only: a stopped check has scored part of an arm's replies)."""
    before, after = summarize(published)["arms"], summarize(larger)["arms"]
    budgets = {arm: attack_budgets(entry) for arm, entry in resolved_arms(published).items()}
    budgets_larger = {arm: attack_budgets(entry) for arm, entry in resolved_arms(larger).items()}
    rows = []
    for arm, entry in after.items():
        if not arm_finished(larger, arm):
            continue
        for attack, stats in entry["attacks"].items():
            old = ((before.get(arm) or {}).get("attacks") or {}).get(attack) or {}
            if attack not in budgets_larger[arm] or attack not in budgets.get(arm, {}) or "psnr_mean" not in stats \
                    or "psnr_mean" not in old:
                continue
            rows.append({"cell": name, "arm": arm, "attack": attack, "budget": budgets[arm][attack],
                         "budget_larger": budgets_larger[arm][attack], "psnr": old["psnr_mean"],
                         "psnr_larger": stats["psnr_mean"], "ssim": old["ssim_mean"],
                         "ssim_larger": stats["ssim_mean"],
                         "converged": converged(stats["psnr_mean"] - old["psnr_mean"],
                                                stats["ssim_mean"] - old["ssim_mean"])})
    return rows


def converged(psnr_moved: float, ssim_moved: float) -> bool:
    """Whether ``FACTOR`` times the budget moved matched PSNR and SSIM by less than the bounds."""
    return abs(psnr_moved) < PSNR_MOVE and abs(ssim_moved) < SSIM_MOVE


def budget_reading(checks: list[dict[str, Any]], cell: str, arm: str, attack: str | None,
                   takes_budget: bool) -> str:
    """What a row's attack budget supports (``cell``: the grid's cell, ``PRIVACY`` or ``SECURE``): closed form,
    converged at 4x, or a lower bound."""
    if attack is None:
        return "–"
    if not takes_budget:
        return CLOSED_FORM
    found = next((c for c in checks if (c["cell"], c["arm"], c["attack"]) == (cell, arm, attack)), None)
    if found is None:
        return NOT_CHECKED
    return f"{verdict(found)} ({FACTOR}x: {found['psnr_larger'] - found['psnr']:+.2f} dB, SSIM " \
           f"{found['ssim_larger'] - found['ssim']:+.3f})"


def strongest_reading(checks: list[dict[str, Any]], cell: str, arm: str, attack: str | None,
                      budgeted: list[str], psnr: float | None) -> str:
    """What a row of the strongest attack rests on (``budgeted``: the optimisation attacks that scored in the
    row's cell and arm; ``psnr``: the row's matched PSNR): its own reading, unless another of those attacks is
    still rising at 4x or was not checked (more budget may lift it above the row's), which makes the row a lower
    bound. An exact row has nothing left to gain."""
    own = budget_reading(checks, cell, arm, attack, attack in budgeted)
    if attack is None or own.startswith(LOWER_BOUND) or (psnr is not None and psnr >= EXACT_DB):
        return own
    found = {c["attack"]: c for c in checks if (c["cell"], c["arm"]) == (cell, arm)}
    rising = [found[a] for a in budgeted if a != attack and a in found and verdict(found[a]) == RISING]
    if rising:
        other = max(rising, key=lambda c: c["psnr_larger"])
        return f"{LOWER_BOUND}: {other['attack']} still rising at {FACTOR}x ({other['attack']} {other['psnr']:.2f} " \
               f"-> {other['psnr_larger']:.2f} dB, SSIM {other['ssim']:.3f} -> {other['ssim_larger']:.3f})"
    unchecked = [a for a in budgeted if a != attack and a not in found]
    return f"{LOWER_BOUND}: {', '.join(unchecked)} not checked at {FACTOR}x" if unchecked else own


def verdict(check: dict[str, Any]) -> str:
    """Converged, rising (the published figure is a lower bound) or falling at the larger budget."""
    if check["converged"]:
        return CONVERGED
    return RISING if check["psnr_larger"] >= check["psnr"] else FALLING
