"""Flower's SecAgg+ in real simulations (SuperLink, Ray, ClientApps; no mocks): the server learns the
aggregate only, which equals the plain weighted mean within the printed quantization bound, the audit
attacks the aggregate and every client scores it against its own batch, and drop-outs are tolerated down
to the reconstruction threshold."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fedmjp.audit.store import AuditStore
from fedmjp.audit.summary import summarize
from fedmjp.errors import InputError
from fedmjp.federation.rundir import atomic_json, read_jsonl
from fedmjp.federation.secure_aggregation import quantization_bound, reply_precision, weight_ratio
from fedmjp.results.budgets import CLOSED_FORM
from fedmjp.results.convergence import FACTOR, PART as CHECKS, SECURE as SECURE_CHECK, larger_budget, \
    read_convergence, secure_check
from fedmjp.results.judging import with_budgets
from fedmjp.results.secure import ATTACKED, PART_DIR, Grid, read_secure, secure_readings, secure_rows, \
    secure_scenario
from fedmjp.results.settings import DEFAULT_SCENARIO
from fedmjp.results.tables import render_secure
from fedmjp.scenario import Arm, SecureAggregation, parse_scenario

from .conftest import CIFAR
from .flower_runs import in_sweep, scenario, write_scenario

SECURE = {"enabled": True}
# Three clients of one example each, FedSGD, the server stepping plain SGD at 1.0: the global weights after
# round 1 are the initial ones minus the aggregate, so two arms of the same seed, one with SecAgg+, differ by
# the aggregate's error alone.
BASE = {key: value for key, value in scenario(
    clients={"num_clients": 3}, training={"rounds": 1, "server_optimizer": "sgd", "server_lr": 1.0}).items()
    if key not in ("name", "audit")}
TWO_ARMS = in_sweep({
    **BASE,
    "name": "secure-aggregation",
    "audit": {"attacks": [{"name": "ig", "options": {"steps": 2}}]},
    "arms": {
        "vit": {"training": {"secure_aggregation": SECURE}},
        "mjp": {"training": {"secure_aggregation": SECURE},
                "model": {"name": "mjp_vit_tiny_patch4_32", "mjp": {"ratio": 0.25}}},
        "vit-plain": {},
    },
})
# Imprint through SecAgg+ at 4 clients x 4 CIFAR-10 images on ViT-Ti/4: the server tunes the settings to its
# bins, or keeps Flower's defaults (its bins' gradients, about 1e-10, are then far below the quantization step).
IMPRINT = {
    **BASE,
    "name": "secure-imprint",
    "data": {"source": "cifar10", "root": CIFAR, "test_limit": 40},
    "clients": {"num_clients": 4, "cpus": 1},
    "training": {**BASE["training"], "batch_size": 4, "secure_aggregation": SECURE},
    "model": {"name": "vit_tiny_patch4_32"},
    "audit": {"server": {"kind": "imprint", "clients": "all", "images": {"source": "photos", "count": 256}}},
    "arms": {"tuned": {}, "defaults": {"audit": {"server": {"tunes_secure_aggregation": False}}}},
}
if os.path.isdir(CIFAR):
    in_sweep(IMPRINT)
# The results' secure-aggregation part on a grid of its own size: the ViT alone, one reply or two through
# SecAgg+, batch 1, a small passive budget; the part's scenario as `fedmjp results --quick` builds it.
PART_GRID = Grid(arms=("vit",), clients=(1, 2), batches=(1,))
PART_OVERRIDES = ["data.source=photos", "data.root=null", "data.test_limit=40",
                  "audit.attacks=[{name: april}, {name: ig, options: {steps: 2}}]"]
PART = in_sweep({"name": "secure-part", "arms": {
    name: arm.model_dump(mode="json") for name, arm in secure_scenario(
        DEFAULT_SCENARIO, "quick", PART_OVERRIDES, PART_GRID).arms.items()}})
# The convergence part's check of it: its passive cells again with 4x the attacks' budget.
PART_CHECK = in_sweep({"name": "secure-part-check", "arms": {
    name: arm.model_dump(mode="json") for name, arm in larger_budget(secure_check(
        DEFAULT_SCENARIO, "quick", PART_OVERRIDES, PART_GRID), FACTOR).arms.items()}})
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(sweep: dict[str, Path]) -> Path:
    return sweep[TWO_ARMS["name"]]


def test_a_two_arm_simulation_with_secagg_attacks_the_aggregate_only(run: Path) -> None:
    records = AuditStore(run).records()
    for arm in ("vit", "mjp"):
        rows = read_jsonl(run / "arms" / arm / "metrics.jsonl")
        assert rows[0]["secure_aggregation"]["clients"] == 3 and rows[0]["aggregated"] == [0, 1, 2]
        attacked = [r for r in records if r.arm == arm and r.attack == "ig"]
        # One attack on the aggregate, scored by each of its three clients against its own batch.
        assert sorted(r.partition_id for r in attacked) == [0, 1, 2]
        assert all(r.threat_model["aggregate"] == "secagg+" and r.threat_model["clients"] == 3 for r in attacked)
        assert all(r.status == "scored" and r.num_examples == 1 and "psnr" in r.metrics for r in attacked)
        assert len({r.metrics["psnr"] for r in attacked}) == 3  # each client scored its own images
    plain = [r for r in records if r.arm == "vit-plain"]
    assert plain and all("aggregate" not in r.threat_model for r in plain)
    arms = summarize(run)["arms"]  # what `fedmjp audit` says of them
    assert arms["vit"]["secure_aggregation"] == {"records": 3, "clients": [3]}
    assert "secure_aggregation" not in arms["vit-plain"]


def test_the_secagg_aggregate_is_the_plain_weighted_mean_within_the_printed_bound(run: Path) -> None:
    secure, plain = (torch.load(run / "arms" / arm / "final_weights.pt") for arm in ("vit", "vit-plain"))
    bound = read_jsonl(run / "arms" / "vit" / "metrics.jsonl")[0]["secure_aggregation"]["error_bound"]
    assert bound == pytest.approx(quantization_bound(SecureAggregation(), [1, 1, 1]))
    error = max(float((secure[name] - plain[name]).abs().max()) for name in plain)
    assert 0 < error <= bound  # quantized (not a plain sum), and within the bound
    # The bound is tight to a factor of a few: three clients' rounding of one step each.
    assert error > bound / 10


def test_imprint_reads_patches_through_secagg_when_the_server_tunes_its_settings(sweep: dict[str, Path]) -> None:
    if IMPRINT["name"] not in sweep:
        pytest.skip(f"{CIFAR} not present")
    run = sweep[IMPRINT["name"]]
    records = [r for r in AuditStore(run).records() if r.attack == "imprint"]
    exact = {arm: [r.metrics["patches_exact"] for r in records if r.arm == arm] for arm in ("tuned", "defaults")}
    assert all(len(v) == 4 for v in exact.values())  # each client scored the aggregate against its batch
    assert all(r.threat_model["aggregate"] == "secagg+" for r in records)
    # Measured: 0.91 of the patches (0.87 to 0.95 per client) tuned; none with Flower's defaults.
    assert np.mean(exact["tuned"]) >= 0.85 and max(exact["defaults"]) < 0.05
    [tuned] = read_jsonl(run / "arms" / "tuned" / "metrics.jsonl")
    assert tuned["secure_aggregation"]["settings_tuned_by_server"] and tuned["aggregated"] == []
    assert tuned["secure_aggregation"]["settings"]["max_weight"] == 4.0
    assert tuned["secure_aggregation"]["settings"]["quantization_range"] == 2**29  # 4 x 2**29 < 2**32


def test_the_results_part_reads_each_cell_from_its_clients_receipts(sweep: dict[str, Path]) -> None:
    rows = secure_rows(sweep[PART["name"]], PART_GRID)
    cells = {(r["clients"], r["attack"]): r for r in rows}
    assert list(cells) == [(1, "passive"), (1, "imprint"), (2, "passive"), (2, "imprint")]
    assert cells[1, "passive"]["strongest"] == "april" and cells[1, "passive"]["psnr"] > 60  # one reply: exact
    assert cells[1, "passive"]["aggregate"] == "one reply" and cells[1, "passive"]["receipts"] == 1
    two = cells[2, "passive"]
    assert two["aggregate"] == "secagg+" and two["receipts"] == 2 and two["strongest"] == "ig"  # april: batch 2
    assert cells[2, "imprint"]["settings"] == "tuned by the server" and cells[2, "imprint"]["patches_exact"] > 0.5
    said = secure_readings(rows)
    assert said[0] == said[1] == "one reply, no SecAgg+ (reference)"
    assert said[2] == ("does not stop it: still recognisable through the sum" if two["recognisable"] else
                       "stops it at this budget: recognisable from one reply, not through the sum (lower bound)")
    assert said[3].startswith(("does not stop it: 0.", "reads fewer: 0.")) and "through the sum of 2 batches" in said[3]
    table = render_secure({"rows": rows, "seed": 0, "accuracy": {"secagg": 0.5, "plain": None}})
    assert sum(line.startswith("| vit |") for line in table) == 4
    assert table[-1].endswith("0.500 test top-1, against – without it.")


def test_the_convergence_part_checks_the_smallest_sums_with_four_times_the_budget(
        sweep: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "results"
    (out / PART_DIR).mkdir(parents=True)
    (out / "runs" / CHECKS).mkdir(parents=True)
    (out / PART_DIR / ATTACKED).symlink_to(sweep[PART["name"]])
    (out / "runs" / CHECKS / SECURE_CHECK).symlink_to(sweep[PART_CHECK["name"]])
    atomic_json(out / PART_DIR / "part.json", {"setting": "quick", "arms": ["vit"], "clients": [1, 2],
                                               "batches": [1], "seed": None})
    checks = read_convergence(out)
    # ig on one reply and on the sum of two; april is closed form, so it has no check.
    assert [(c["cell"], c["arm"], c["attack"]) for c in checks] == [
        (SECURE_CHECK, "vit-k1-b1-passive", "ig"), (SECURE_CHECK, "vit-k2-b1-passive", "ig")]
    assert all(c["budget"] == "2 steps" and c["budget_larger"] == "8 steps" for c in checks)
    # The same clients sent the same batches: each receipt's baseline (its batch against the mean image) agrees.
    published, larger = (AuditStore(sweep[name]).records() for name in (PART["name"], PART_CHECK["name"]))
    baselines = {(r.arm, r.partition_id, r.attack): r.baseline for r in published}
    assert all(r.baseline == baselines[r.arm, r.partition_id, r.attack] for r in larger)
    part = with_budgets(read_secure(out), checks, out)
    budgets = {(r["clients"], r["attack"]): r["budget"] for r in part["rows"]}
    assert budgets[1, "passive"] == budgets[1, "imprint"] == budgets[2, "imprint"] == CLOSED_FORM  # april, imprint
    assert budgets[2, "passive"].startswith(("converged (4x: ", "lower bound: still rising at 4x (4x: ",
                                             "not converged: lower at 4x (4x: "))
    table = render_secure(part)
    assert sum(f"| {budgets[2, 'passive']} |" in line for line in table) == 1


def test_the_check_takes_the_parts_passive_cells_of_one_and_two_clients_from_its_whole_federation() -> None:
    grid = Grid(arms=("vit", "mjp-0.25"), clients=(1, 2, 4, 8), batches=(1, 4))
    check = secure_check(DEFAULT_SCENARIO, "quick", [], grid)
    assert sorted(check.arms) == sorted(f"{arm}-k{k}-b{b}-passive" for arm in grid.arms for k in (1, 2) for b in (1, 4))
    assert all(arm.clients.num_clients == 8 for arm in check.arms.values())  # as the part ran them
    part = secure_scenario(DEFAULT_SCENARIO, "quick", [], grid)
    assert all(arm == part.arms[name] for name, arm in check.arms.items())  # at the part's budget, scaled at run


def test_the_bound_adds_the_weights_rounding_when_counts_differ() -> None:
    settings = SecureAggregation(max_weight=3.0, quantization_range=2**4)
    assert weight_ratio(settings, 1) == 0.3125  # round(16 / 3) / 16
    equal, unequal = quantization_bound(settings, [1, 1]), quantization_bound(settings, [1, 2])
    assert equal == pytest.approx(2 * settings.step / 0.625)
    assert unequal > 2 * settings.step / (0.3125 + 0.6875)


def test_a_client_measures_what_the_settings_do_to_its_reply() -> None:
    settings = SecureAggregation()  # step 2 * 8 / 2**22 at weight 1 / 1000
    precision = reply_precision(settings, [np.full(10, 1e-3), np.full(10, 9000.0)], num_examples=1)
    assert precision["secagg.saturated"] == 0.5  # 9000 / 1000 reaches the clipping range of 8
    small = reply_precision(settings, [np.full(4, 1e-3)], num_examples=1)
    assert small["secagg.steps-per-rms"] == pytest.approx(1e-3 * weight_ratio(settings, 1) / settings.step)


@pytest.mark.parametrize(("change", "field"), [
    ({"clients": {"num_clients": 1}}, "training.secure_aggregation.enabled"),
    ({"training": {"secure_aggregation": {**SECURE, "num_shares": 2}}}, "training.secure_aggregation.num_shares"),
    ({"training": {"secure_aggregation": {**SECURE, "modulus_range": 2**20, "quantization_range": 2**19}}},
     "training.secure_aggregation.quantization_range"),
    ({"audit": {"clients": 1}}, "audit.clients"),
    ({"faults": {"fraction": 0.5, "kinds": ["nan"]}}, "faults.kinds"),
])
def test_secagg_settings_flower_refuses_are_one_line_errors(change: dict, field: str) -> None:
    content = {**BASE, "name": "bad", "training": {**BASE["training"], "secure_aggregation": SECURE}}
    for key, value in change.items():
        content[key] = {**content.get(key, {}), **value}
    with pytest.raises(InputError) as error:
        parse_scenario(content)
    assert str(error.value).startswith(f"scenario: {field}") and "\n" not in str(error.value)


def test_secagg_is_refused_in_process() -> None:
    from fedmjp.launch.inprocess import check_in_process

    arm = Arm.model_validate({**BASE, "training": {**BASE["training"], "secure_aggregation": SECURE}})
    with pytest.raises(InputError, match="training.secure_aggregation.enabled: not available in-process"):
        check_in_process(arm)


def test_dropouts_are_tolerated_down_to_the_threshold_and_stop_the_round_below_it(
        tmp_path: Path, ray_cluster: str) -> None:
    """Seed 0, round 1: partition 1 draws 0.13 and partition 2 draws 0.37 (fedmjp.federation.faults), so at a
    fault fraction of 0.2 one of three clients raises after the keys were shared, and at 0.5 two do. With
    Flower's 3 shares and threshold 2, the round survives one drop-out and halts at two."""
    content = {**BASE, "name": "dropouts", "training": {**BASE["training"], "secure_aggregation": SECURE},
               "arms": {"one-drops": {"faults": {"fraction": 0.2}}, "two-drop": {"faults": {"fraction": 0.5}}}}
    done = subprocess.run([sys.executable, "-m", "fedmjp", "simulate", str(write_scenario(tmp_path, content)),
                           "--out", str(tmp_path / "run"), "--ray-address", ray_cluster],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode != 0
    assert "round 1: secure aggregation halted in its collect masked vectors stage: 1 of 3 clients left" \
        in done.stderr, done.stderr[-2000:]
    survived = read_jsonl(tmp_path / "run" / "arms" / "one-drops" / "metrics.jsonl")[0]
    assert survived["secure_aggregation"]["clients"] == 2 and survived["secure_aggregation"]["dropped"] == [1]
    assert survived["aggregated"] == [0, 2]
    faults = [r for r in AuditStore(tmp_path / "run").records() if r.status == "fault"]
    assert {(r.arm, r.partition_id) for r in faults} == {("one-drops", 1), ("two-drop", 1), ("two-drop", 2)}
    assert all(r.reason.startswith("secure aggregation, collect masked vectors: error:") for r in faults)
