"""An optimisation attack's budget as the results state it and scale it: its steps, and the adaptive
attack's refinement rounds (which it runs before any steps on one example). A closed-form attack has none."""

from __future__ import annotations

from typing import Any

from ..attacks.adaptive import BATCH_STEPS, REFINEMENT_ROUNDS

ROUNDS_OF = {"adaptive": REFINEMENT_ROUNDS}  # attack -> its refinement rounds when the options give none
# attack -> its steps on a batch's gradient when the options give none (its rounds refine one example only)
BATCH_STEPS_OF = {"adaptive": BATCH_STEPS}
# What a figure's budget supports (the convergence check's readings).
CLOSED_FORM = "closed form"
CONVERGED = "converged"
LOWER_BOUND = "lower bound"  # every reading that makes a figure a lower bound on the leak starts with it
RISING = f"{LOWER_BOUND}: still rising at 4x"
FALLING = "not converged: lower at 4x"
NOT_CHECKED = f"{LOWER_BOUND}: not checked at 4x"


def budget_of(spec: dict[str, Any], one_example: bool = True) -> dict[str, int]:
    """The budget an attack spec (``{name, options}``) runs with on one example's gradient, or on a batch's:
    steps and rounds, defaults filled in (empty for an attack that takes no budget)."""
    options = spec.get("options") or {}
    if not one_example and spec["name"] in BATCH_STEPS_OF:
        return {"steps": options.get("steps", BATCH_STEPS_OF[spec["name"]])}
    budget = {"steps": options["steps"]} if "steps" in options else {}
    if spec["name"] in ROUNDS_OF:
        rounds = options.get("rounds")
        budget["rounds"] = ROUNDS_OF[spec["name"]] if rounds is None else rounds
    return budget


def scaled_budget(spec: dict[str, Any], factor: int, one_example: bool = True) -> dict[str, Any]:
    """The spec with ``factor`` times the budget it runs with (on one example, or a batch); a closed-form
    attack stays as it is."""
    budget = budget_of(spec, one_example)
    if not budget:
        return spec
    return {**spec, "options": {**(spec.get("options") or {}), **{k: factor * v for k, v in budget.items()}}}


def with_restarts(spec: dict[str, Any], restarts: int, one_example: bool = True) -> dict[str, Any] | None:
    """The spec with ``restarts`` restarts (its best kept by gradient distance), or None where the attack runs
    no optimisation steps on this gradient (a closed form; the adaptive attack's refinement of one example,
    which starts from one noise draw whatever the restarts)."""
    if not budget_of(spec, one_example).get("steps"):
        return None
    return {**spec, "options": {**(spec.get("options") or {}), "restarts": restarts}}


def check_specs(specs: list[dict[str, Any]], factor: int, one_example: bool,
                restarts: int | None = None) -> list[dict[str, Any]]:
    """A convergence check's attacks: each spec with ``factor`` times its budget; with ``restarts``, only those
    that take restarts, each with that many."""
    scaled = [scaled_budget(spec, factor, one_example) for spec in specs]
    if restarts is None:
        return scaled
    return [spec for spec in (with_restarts(s, restarts, one_example) for s in scaled) if spec is not None]


def budget_words(budget: dict[str, int]) -> str:
    """"200 steps, 100 rounds"."""
    return ", ".join(f"{value} {key}" for key, value in budget.items())


def attacks_one_example(arm: dict[str, Any]) -> bool:
    """Whether a resolved arm's attacks see one example's gradient: batch size 1, and no SecAgg+ (whose
    aggregate sums the batches of two clients or more)."""
    training = arm.get("training") or {}
    return training.get("batch_size", 1) == 1 and not (training.get("secure_aggregation") or {}).get("enabled")


def attack_budgets(arm: dict[str, Any]) -> dict[str, str]:
    """attack -> its budget in words, for a resolved arm's attacks that take one."""
    one = attacks_one_example(arm)
    found = {spec["name"]: budget_of(spec, one) for spec in (arm.get("audit") or {}).get("attacks", [])}
    return {name: budget_words(budget) for name, budget in found.items() if budget}
