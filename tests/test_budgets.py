"""An optimisation attack's budget as the results state and scale it: what the attack really runs with on one
example's gradient and on a batch's, so that a convergence check at 4x scales what the attack spends; and what a
row's figure rests on after the check."""

from __future__ import annotations

from fedmjp.attacks import build_attack
from fedmjp.attacks.adaptive import BATCH_STEPS, REFINEMENT_ROUNDS
from fedmjp.results.budgets import CLOSED_FORM, attack_budgets, attacks_one_example, budget_of, scaled_budget
from fedmjp.results.convergence import PSNR_MOVE, budget_reading, strongest_reading

ADAPTIVE = {"name": "adaptive"}


def test_the_adaptive_attack_spends_rounds_on_one_example_and_gradient_matching_steps_on_a_batch() -> None:
    assert budget_of(ADAPTIVE) == {"rounds": REFINEMENT_ROUNDS}
    assert budget_of(ADAPTIVE, one_example=False) == {"steps": BATCH_STEPS}
    assert budget_of({"name": "adaptive", "options": {"steps": 200}}, one_example=False) == {"steps": 200}
    assert budget_of({"name": "april"}) == budget_of({"name": "april"}, one_example=False) == {}


def test_four_times_a_batchs_budget_reaches_the_attack_it_builds() -> None:
    larger = scaled_budget(ADAPTIVE, 4, one_example=False)
    assert build_attack("adaptive", **larger["options"]).batch_budget.steps == 4 * BATCH_STEPS
    one = scaled_budget(ADAPTIVE, 4)
    assert build_attack("adaptive", **one["options"]).rounds == 4 * REFINEMENT_ROUNDS
    assert scaled_budget({"name": "ig", "options": {"steps": 200}}, 4)["options"]["steps"] == 800


def test_a_secagg_aggregate_is_a_batch_even_of_single_examples() -> None:
    def arm(batch: int, secure: bool) -> dict:
        return {"training": {"batch_size": batch, "secure_aggregation": {"enabled": secure}},
                "audit": {"attacks": [ADAPTIVE]}}

    assert attacks_one_example(arm(1, False))
    assert not attacks_one_example(arm(1, True)) and not attacks_one_example(arm(4, False))
    assert attack_budgets(arm(1, False)) == {"adaptive": f"{REFINEMENT_ROUNDS} rounds"}
    assert attack_budgets(arm(1, True)) == {"adaptive": f"{BATCH_STEPS} steps"}


def _check(attack: str, psnr: float, psnr_larger: float) -> dict:
    return {"cell": "privacy", "arm": "mjp", "attack": attack, "budget": "b", "budget_larger": "4b", "psnr": psnr,
            "psnr_larger": psnr_larger, "ssim": 0.1, "ssim_larger": 0.1,
            "converged": abs(psnr_larger - psnr) < PSNR_MOVE}


def test_a_strongest_row_is_a_lower_bound_while_another_attack_of_its_cell_still_rises() -> None:
    checks = [_check("adaptive", 24.6, 24.7), _check("ig", 14.0, 15.5)]
    assert budget_reading(checks, "privacy", "mjp", "adaptive", True).startswith("converged")
    scored = ["adaptive", "ig"]
    assert strongest_reading(checks, "privacy", "mjp", "adaptive", scored, 24.6) == \
        "lower bound: ig still rising at 4x (ig 14.00 -> 15.50 dB, SSIM 0.100 -> 0.100)"
    # A closed form's row too: the rising attack may overtake it; not an exact one.
    assert strongest_reading(checks, "privacy", "mjp", "april", scored, 18.0).startswith("lower bound: ig still rising")
    assert strongest_reading(checks, "privacy", "mjp", "april", scored, 100.0) == CLOSED_FORM
    settled = [_check("adaptive", 24.6, 24.7), _check("ig", 14.0, 14.2)]
    assert strongest_reading(settled, "privacy", "mjp", "adaptive", scored, 24.6).startswith("converged")
    assert strongest_reading(settled, "privacy", "mjp", "april", scored, 18.0) == CLOSED_FORM
    # An attack that scored but was not checked may overtake as well.
    assert strongest_reading(settled, "privacy", "mjp", "april", [*scored, "dlg"], 18.0) == \
        "lower bound: dlg not checked at 4x"
