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
on one example (:mod:`.budgets`). On a sample (``RESTARTS``), the attacks that take restarts run at 4x with more
of them too, into ``runs/convergence/restarts/...``; a sampled attack converged only if neither moved it. A row of
an arm's strongest attack is a lower bound too while another of its attacks is still rising or was not checked
(:func:`strongest_reading`).
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
                      attacks_one_example, check_specs)
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
# More restarts, on a sample: the privacy part's SAMPLE_ARMS and the grid's SAMPLE cells run again at FACTOR times
# the budget with RESTARTS restarts (the one of least gradient distance kept), into runs/convergence/restarts/....
# Every restart is a whole attack: on every check they would multiply its hours.
RESTARTS = 4
RESTARTS_DIR = "restarts"


def run_convergence(path: Path, out: Path, setting: str, overrides: list[str], arms: list[str] | None,
                    seed: int | None, progress: Progress = lambda *_: None, ray_address: str | None = None) -> Path:
    """With ``FACTOR`` times every attack's budget, into ``out/runs/convergence``: the privacy part's arms of
    ``PRIVACY_SAMPLE``, its ``SAMPLE_ARMS`` with ``RESTARTS`` restarts too, and the secure part's sampled cells
    (each when its part has run into ``out``), through Flower as one sweep; then the grid's sampled cells, and
    again with ``RESTARTS`` restarts."""
    from ..launch.simulate import Planned, simulate_runs

    planned: list[Planned] = []
    sample = PRIVACY_SAMPLE[setting]
    checked = arms if sample is None else [a for a in sample if arms is None or a in arms]
    chosen = [a for a in SAMPLE_ARMS if arms is None or a in arms]
    if (out / "runs" / PRIVACY / "scenario.yaml").is_file():
        if checked != []:
            planned.append(Planned(larger_budget(load_part(path, setting, PRIVACY, overrides, checked), FACTOR),
                                   out / "runs" / PART / PRIVACY))
        if chosen and (restarted := larger_budget(load_part(path, setting, PRIVACY, overrides, chosen), FACTOR,
                                                  RESTARTS)).arms:
            planned.append(Planned(restarted, out / "runs" / PART / RESTARTS_DIR / PRIVACY))
    ran = ran_grid(out)
    if ran is not None and ran[0].arms:
        planned.append(Planned(larger_budget(secure_check(path, setting, overrides, ran[0]), FACTOR),
                               out / "runs" / PART / SECURE))
    if planned:
        planned = [Planned(p.scenario if seed is None else p.scenario.with_seed(seed), p.out) for p in planned]
        simulate_runs(planned, lambda run, arm, done, total: progress(f"{_name(out, planned[run].out)}: {arm}", done,
                                                                      total), ray_address)
    grid = run_realism(path, out, setting, overrides, chosen, seed,
                       lambda _cell, done, total: progress("cells", done, total), part=PART, only=SAMPLE[setting],
                       budget_factor=FACTOR)
    run_realism(path, out, setting, overrides, chosen, seed,
                lambda _cell, done, total: progress(f"{RESTARTS_DIR}: cells", done, total),
                part=f"{PART}/{RESTARTS_DIR}", only=SAMPLE[setting], budget_factor=FACTOR, restarts=RESTARTS)
    return grid


def _name(out: Path, run_dir: Path) -> str:
    """"restarts/privacy": a check's run directory as progress names it."""
    return str(run_dir.relative_to(out / "runs" / PART))


def secure_check(path: Path, setting: str, overrides: list[str], grid: Grid) -> Scenario:
    """The secure part's passive cells of ``SECURE_CLIENTS`` clients a round, as the part ran them (its whole
    grid's federation, so the same clients and replies), at the part's budget."""
    part = secure_scenario(path, setting, overrides, grid)
    cells = {cell_name(*cell) for cell in grid.cells() if cell[1] in SECURE_CLIENTS and cell[3] == "passive"}
    return part.model_copy(update={"arms": {name: arm for name, arm in part.arms.items() if name in cells}})


def larger_budget(scenario: Scenario, factor: int, restarts: int | None = None) -> Scenario:
    """The scenario with ``factor`` times every arm's attack budgets; with ``restarts``, only the attacks that
    take restarts, each with that many, and only the arms left with one."""
    arms = {name: arm.model_copy(update={"audit": arm.audit.model_copy(update={"attacks": [
        AttackSpec.model_validate(spec) for spec in check_specs(
            [s.model_dump() for s in arm.audit.attacks], factor, attacks_one_example(arm.model_dump(mode="json")),
            restarts)]})})
        for name, arm in scenario.arms.items()}
    if restarts is not None:
        arms = {name: arm for name, arm in arms.items() if arm.audit.attacks}
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
            rows += _checks(name, published, larger, checked / RESTARTS_DIR / name)
    return rows


def _checks(name: str, published: Path, larger: Path, restarted: Path) -> list[dict[str, Any]]:
    """The rows of one check: each arm's optimisation attacks scored in both run directories (arms the check
    finished only: a stopped check has scored part of an arm's replies), with the sample's run of more restarts
    where it has one (converged only if both larger budgets moved it less than the bounds)."""
    before = summarize(published)["arms"]
    budgets = {arm: attack_budgets(entry) for arm, entry in resolved_arms(published).items()}
    restarts = _scored(restarted, with_restarts=True)
    rows = []
    for (arm, attack), found in _scored(larger).items():
        old = ((before.get(arm) or {}).get("attacks") or {}).get(attack) or {}
        if attack not in budgets.get(arm, {}) or "psnr_mean" not in old:
            continue
        row = {"cell": name, "arm": arm, "attack": attack, "budget": budgets[arm][attack],
               "budget_larger": found["budget"], "psnr": old["psnr_mean"], "psnr_larger": found["psnr"],
               "ssim": old["ssim_mean"], "ssim_larger": found["ssim"]}
        more = restarts.get((arm, attack))
        if more is not None:
            row |= {"budget_restarts": more["budget"], "restarts": more["restarts"], "psnr_restarts": more["psnr"],
                    "ssim_restarts": more["ssim"]}
        row["converged"] = all(converged(row[f"psnr_{k}"] - row["psnr"], row[f"ssim_{k}"] - row["ssim"])
                               for k in ("larger", "restarts") if f"psnr_{k}" in row)
        rows.append(row)
    return rows


def _scored(run_dir: Path, with_restarts: bool = False) -> dict[tuple[str, str], dict[str, Any]]:
    """(arm, optimisation attack) -> its budget in words (with its restarts), the restarts its options set, matched
    PSNR and SSIM in a check's run directory: arms it finished only (empty when it did not run)."""
    if not (run_dir / "scenario.yaml").is_file():
        return {}
    resolved = resolved_arms(run_dir)
    found = {}
    for arm, entry in summarize(run_dir)["arms"].items():
        if not arm_finished(run_dir, arm):
            continue
        budgets = attack_budgets(resolved[arm])
        specs = {spec["name"]: spec.get("options") or {} for spec in resolved[arm]["audit"]["attacks"]}
        for attack, stats in entry["attacks"].items():
            if attack in budgets and "psnr_mean" in stats:
                restarts = specs[attack].get("restarts")
                words = f"{budgets[attack]}, {restarts} restarts" if with_restarts else budgets[attack]
                found[arm, attack] = {"budget": words, "restarts": restarts, "psnr": stats["psnr_mean"],
                                      "ssim": stats["ssim_mean"]}
    return found


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
    runs = [(f"{FACTOR}x", "larger")]
    if "psnr_restarts" in found:
        runs.append((f"{FACTOR}x, {found['restarts']} restarts", "restarts"))
    moves = [f"{label}: {found[f'psnr_{key}'] - found['psnr']:+.2f} dB, "
             f"SSIM {found[f'ssim_{key}'] - found['ssim']:+.3f}" for label, key in runs]
    return f"{verdict(found)} ({'; '.join(moves)})"


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
        other = max(rising, key=lambda c: strongest_larger(c)[0])
        psnr_larger, ssim_larger = strongest_larger(other)
        return f"{LOWER_BOUND}: {other['attack']} still rising at {FACTOR}x ({other['attack']} {other['psnr']:.2f} " \
               f"-> {psnr_larger:.2f} dB, SSIM {other['ssim']:.3f} -> {ssim_larger:.3f})"
    unchecked = [a for a in budgeted if a != attack and a not in found]
    return f"{LOWER_BOUND}: {', '.join(unchecked)} not checked at {FACTOR}x" if unchecked else own


def strongest_larger(check: dict[str, Any]) -> tuple[float, float]:
    """Matched PSNR and SSIM of the stronger of a check's larger budgets (4x; 4x with more restarts, if run)."""
    runs = [(check["psnr_larger"], check["ssim_larger"])]
    if "psnr_restarts" in check:
        runs.append((check["psnr_restarts"], check["ssim_restarts"]))
    return max(runs)


def verdict(check: dict[str, Any]) -> str:
    """Converged, rising (the published figure is a lower bound) or falling at the larger budgets."""
    if check["converged"]:
        return CONVERGED
    return RISING if strongest_larger(check)[0] >= check["psnr"] else FALLING
