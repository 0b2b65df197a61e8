"""An optimisation attack's budget as the results state and scale it: what the attack really runs with on one
example's gradient and on a batch's, so that a convergence check at 4x scales what the attack spends; and what a
row's figure rests on after the check."""

from __future__ import annotations

from fedmjp.attacks import build_attack
from fedmjp.attacks.adaptive import BATCH_STEPS, REFINEMENT_ROUNDS
from fedmjp.results.budgets import (CLOSED_FORM, attack_budgets, attacks_one_example, budget_of, check_specs,
                                    scaled_budget)
from fedmjp.results.convergence import PSNR_MOVE, budget_reading, larger_budget, strongest_reading, verdict
from fedmjp.results.settings import DEFAULT_SCENARIO, load_part

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


def test_more_restarts_go_to_the_attacks_that_optimise_and_reach_the_attack_they_build() -> None:
    specs = [{"name": "april"}, ADAPTIVE, {"name": "ig", "options": {"steps": 200, "restarts": 1}}]
    # On one example april is a closed form and the adaptive attack refines from one noise draw: neither restarts.
    assert check_specs(specs, 4, True, restarts=4) == [{"name": "ig", "options": {"steps": 800, "restarts": 4}}]
    on_a_batch = check_specs(specs, 4, False, restarts=4)
    assert [s["name"] for s in on_a_batch] == ["adaptive", "ig"]
    built = build_attack("adaptive", **on_a_batch[0]["options"]).batch_budget
    assert (built.steps, built.restarts) == (4 * BATCH_STEPS, 4)
    assert check_specs(specs, 4, True) == [scaled_budget(s, 4) for s in specs]  # one restart: every attack
    # The privacy part's check of more restarts: its ig only, every arm that runs it.
    part = load_part(DEFAULT_SCENARIO, "full", "privacy", [], ["vit", "mjp-0.25"])
    restarted = larger_budget(part, 4, restarts=4)
    assert {name: [(s.name, s.options) for s in arm.audit.attacks] for name, arm in restarted.arms.items()} == {
        name: [("ig", {"steps": 800, "restarts": 4})] for name in ("vit", "mjp-0.25")}
    assert not larger_budget(load_part(DEFAULT_SCENARIO, "full", "privacy", ["audit.attacks=[{name: april}]"],
                                       ["vit"]), 4, restarts=4).arms  # nothing to restart: no arm to run


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
    # Checked with more restarts too: converged only if neither larger budget moved it; rising if either did.
    restarted = {**_check("ig", 14.0, 14.2), "budget_restarts": "800 steps, 4 restarts", "restarts": 4,
                 "psnr_restarts": 15.3, "ssim_restarts": 0.1, "converged": False}
    assert verdict(restarted) == "lower bound: still rising at 4x"
    assert budget_reading([restarted], "privacy", "mjp", "ig", True) == \
        "lower bound: still rising at 4x (4x: +0.20 dB, SSIM +0.000; 4x, 4 restarts: +1.30 dB, SSIM +0.000)"
    assert strongest_reading([settled[0], restarted], "privacy", "mjp", "adaptive", scored, 24.6) == \
        "lower bound: ig still rising at 4x (ig 14.00 -> 15.30 dB, SSIM 0.100 -> 0.100)"
    # An attack that scored but was not checked may overtake as well.
    assert strongest_reading(settled, "privacy", "mjp", "april", [*scored, "dlg"], 18.0) == \
        "lower bound: dlg not checked at 4x"
