"""Seeds: the t interval and the paired test on known numbers, the reading's rule, and that arms of one
seed start from the same split and weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedmjp.errors import InputError
from fedmjp.scoring.stats import ALPHA, LOWER, NO_DIFFERENCE, TOO_FEW, paired_p, reading, t_interval
from fedmjp.scenario import parse_scenario
from fedmjp.federation.workload import build_model, client_batches, heldout_indices, partition_indices

ARMS = {
    "vit": {},
    "mjp-0.25": {"model": {"name": "mjp_vit_tiny_patch4_32", "mjp": {"ratio": 0.25}}},
    "prune-0.9": {"defence": {"prune": 0.9}},
}


def seeded(seeds: list[int], **base: object) -> object:
    return parse_scenario({"data": {"source": "photos", "test_limit": 20}, "clients": {"num_clients": 4},
                           "model": {"name": "vit_tiny_patch4_32", "kwargs": {"depth": 1}}, "seeds": seeds,
                           "arms": ARMS, **base})


def test_t_interval_on_known_numbers() -> None:
    # mean 0.42, sd 0.02, n 3: half-width t(0.975, 2) * 0.02 / sqrt(3) = 4.302653 * 0.011547 = 0.049683
    mean, low, high = t_interval([0.40, 0.42, 0.44])
    assert mean == pytest.approx(0.42)
    assert low == pytest.approx(0.42 - 0.049683, abs=1e-6) and high == pytest.approx(0.42 + 0.049683, abs=1e-6)


def test_t_interval_needs_two_values_and_collapses_when_they_agree() -> None:
    assert t_interval([0.3]) == (0.3, None, None)
    assert t_interval([0.3, 0.3, 0.3]) == pytest.approx((0.3, 0.3, 0.3))


def test_paired_test_on_known_numbers() -> None:
    # differences -0.01, -0.03, -0.02: t = -0.02 / (0.01 / sqrt 3) = -3.4641 on 2 degrees of freedom;
    # for 2 df the two-sided p is 1 - |t| / sqrt(2 + t^2) = 1 - 3.4641 / 3.7417 = 0.074180
    assert paired_p([0.40, 0.42, 0.44], [0.41, 0.45, 0.46]) == pytest.approx(0.074180, abs=1e-5)
    # unpaired, the same numbers would look alike: the pairing is what the test uses
    assert paired_p([0.40, 0.42, 0.44], [0.44, 0.40, 0.42]) == pytest.approx(1.0)


def test_paired_test_without_spread_in_the_differences() -> None:
    assert paired_p([0.5, 0.6], [0.5, 0.6]) == 1.0  # identical arms
    assert paired_p([0.4, 0.5], [0.5, 0.6]) == 0.0  # always exactly 0.1 lower
    assert paired_p([0.4], [0.5]) is None
    with pytest.raises(ValueError, match="paired test"):
        paired_p([0.4, 0.5], [0.5])


def test_reading_names_the_seeds_and_the_direction() -> None:
    assert reading([0.40, 0.42, 0.44], [0.41, 0.45, 0.46], False) == "no significant difference at 3 seeds"
    assert reading([0.30, 0.31, 0.33], [0.40, 0.42, 0.44], False) == LOWER.format(alpha=ALPHA, n=3)
    assert reading([0.50, 0.52, 0.53], [0.40, 0.42, 0.44], False).startswith("higher than ViT")
    assert reading([0.3], [0.4], False) == TOO_FEW.format(n=1)
    assert reading([0.4, 0.5], [0.4, 0.5], True) == "reference"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), min_size=2, max_size=8))
def test_no_significant_difference_appears_exactly_when_p_is_at_least_alpha(pairs: list[tuple[float, float]]) -> None:
    values, reference = [a for a, _ in pairs], [b for _, b in pairs]
    p = paired_p(values, reference)
    said = reading(values, reference, False)
    assert (said == NO_DIFFERENCE.format(n=len(pairs))) == (p is not None and p >= ALPHA)
    if p is not None and p < ALPHA:
        assert said.startswith("lower" if np.mean(values) < np.mean(reference) else "higher")


def test_arms_with_the_same_seed_see_the_same_split_and_initial_weights() -> None:
    scenario = seeded([0, 1])
    weights = {}
    for seed in (0, 1):
        arms = scenario.with_seed(seed).arms
        assert all(arm.seed == seed for arm in arms.values())
        splits = [[partition_indices(arm, p) for p in range(4)] for arm in arms.values()]
        assert all(np.array_equal(a, b) for split in splits[1:] for a, b in zip(splits[0], split))
        batches = [client_batches(arm, 2, server_round=1) for arm in arms.values()]
        assert all(np.array_equal(a, b) for other in batches[1:] for a, b in zip(batches[0], other))
        tests = [heldout_indices(arm) for arm in arms.values()]
        assert all(np.array_equal(tests[0], t) for t in tests[1:])
        models = {name: build_model(arm).state_dict() for name, arm in arms.items()}
        shared = set(models["vit"]) & set(models["mjp-0.25"])
        assert {"pos_embed", "patch_embed.proj.weight", "head.weight"} <= shared
        for name, state in models.items():
            for key in shared:
                assert torch.equal(state[key], models["vit"][key]), (seed, name, key)
        weights[seed] = (models["vit"], partition_indices(arms["vit"], 0))
    # and another seed is another start
    assert not torch.equal(weights[0][0]["patch_embed.proj.weight"], weights[1][0]["patch_embed.proj.weight"])
    assert not np.array_equal(weights[0][1], weights[1][1])


def test_seeds_replace_each_arms_seed_and_are_kept_on_the_scenario() -> None:
    scenario = seeded([3, 1, 2], seed=7)
    assert scenario.seeds == [3, 1, 2] and all(arm.seed == 7 for arm in scenario.arms.values())
    assert scenario.with_seed(2).seeds is None


@pytest.mark.parametrize("seeds", [[], [1, 1], [-1], ["a"], 3, [True]])
def test_bad_seeds_are_one_line_errors_naming_the_field(seeds: object) -> None:
    with pytest.raises(InputError, match=r"^scenario: seeds: "):
        parse_scenario({"data": {"source": "photos"}, "seeds": seeds})
