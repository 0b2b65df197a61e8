"""An optimisation attack's budget as the results state and scale it: what the attack really runs with on one
example's gradient and on a batch's, so that a convergence check at 4x scales what the attack spends."""

from __future__ import annotations

from fedmjp.attacks import build_attack
from fedmjp.attacks.adaptive import BATCH_STEPS, REFINEMENT_ROUNDS
from fedmjp.results.budgets import attack_budgets, attacks_one_example, budget_of, scaled_budget

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
