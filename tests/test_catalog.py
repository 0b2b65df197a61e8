"""fedmjp.catalog lists what a scenario may name without importing torch; these tests hold it to the registries it
describes, and check that validating a shipped scenario stays free of torch."""

from __future__ import annotations

import dataclasses
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

from fedmjp.catalog import ATTACK_OPTIONS, OWN_MODELS, Budget

ROOT = Path(__file__).resolve().parents[1]

# A valid value for every option any attack takes.
SAMPLES = {
    "steps": 1, "restarts": 1, "lr": 0.1, "tv": 0.0, "patch_prior": 0.5, "optimizer": "adam", "signed": True, "seed": 0, "log_every": 1,
    "layer_weights": {"head.weight": 2.0}, "centred_pos": 1.0, "pos_weight": 1.0, "rounds": 1, "knows_check": "none",
    "blocks": 1, "batch": 1,
}


def test_own_models_are_the_models_fedmjp_registers_with_their_classes() -> None:
    import timm

    import fedmjp.models  # noqa: F401  (registers them)
    from fedmjp.models import registry

    registered = set(timm.list_models(module=registry.__name__.rsplit(".", 1)[-1]))  # timm keys by the last part
    assert registered == set(OWN_MODELS)
    assert {name: timm.models.get_pretrained_cfg(name).num_classes for name in registered} == OWN_MODELS


def test_the_catalog_lists_every_registered_attack() -> None:
    from fedmjp.attacks import attack_names

    assert attack_names() == sorted(ATTACK_OPTIONS)


def test_the_budget_options_are_the_optimisers_budget() -> None:
    from fedmjp.attacks.gradient_matching import Budget as OptimiserBudget

    assert set(Budget.model_fields) == {field.name for field in dataclasses.fields(OptimiserBudget)}


@pytest.mark.parametrize("name", sorted(ATTACK_OPTIONS))
def test_each_attack_takes_exactly_its_catalogued_options(name: str) -> None:
    from fedmjp.attacks import build_attack
    from fedmjp.attacks.base import _ATTACKS

    schema = ATTACK_OPTIONS[name]
    named = {p.name for p in inspect.signature(_ATTACKS[name]).parameters.values() if p.kind != p.VAR_KEYWORD}
    assert named <= set(schema.model_fields)  # every parameter of the factory is catalogued
    for option in schema.model_fields:  # and every catalogued option builds (no TypeError from the factory)
        schema.model_validate({option: SAMPLES[option]})
        assert build_attack(name, **{option: SAMPLES[option]}) is not None
    with pytest.raises(ValueError, match=rf"attack.options.stepz: {name} takes no option 'stepz'"):
        build_attack(name, stepz=1)


def test_validating_a_shipped_scenario_imports_no_torch() -> None:
    code = ("import sys; from fedmjp.scenario import load_scenario; load_scenario('scenarios/ci-smoke.yaml'); "
            "load_scenario('scenarios/quickstart.yaml'); print('torch' in sys.modules, 'timm' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False"]
