"""The results' grid of where users train: batch size x local training x stage, from real in-process rounds.

A reduced grid (two arms, batches 1 and 4, a few attack steps) on the photos that ship with scikit-image, its
"trained" stage from a real (one-round) accuracy run's final weights: every number of the table is the
summary of the cell's run directory, and the trained cells really start from those weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fedmjp.audit.summary import read_records, summarize
from fedmjp.launch.inprocess import simulate_in_process
from fedmjp.results.judging import realism_rows, where_recognisability_stops
from fedmjp.results.realism import RECOGNISABLE_SSIM, Budget, cells, read_realism, run_realism
from fedmjp.results.settings import DEFAULT_SCENARIO, load_part
from fedmjp.results.tables import render_convergence, render_realism
from fedmjp.federation.rundir import read_jsonl
from fedmjp.scenario import parse_scenario

ARMS = ["vit", "mjp-0.25"]
# Unscoped: both parts and every cell; "realism:": the cells only.
OVERRIDES = ["data.source=photos", "data.root=null", "accuracy:training.rounds=1", "accuracy:training.local_steps=2",
             "accuracy:data.test_limit=20", "realism:data.test_limit=20"]
# FedAvg cells with their own (smaller) attack budget, as the full setting's.
BUDGET = Budget(examples=4, replies=1, steps=3, attacks=("april", "ig", "adaptive"), fedavg=(1, 2))
BATCHES = (1, 4)


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("grid")
    accuracy = load_part(DEFAULT_SCENARIO, "quick", "accuracy", OVERRIDES, ARMS)
    simulate_in_process(accuracy, out / "runs" / "accuracy")
    run_realism(DEFAULT_SCENARIO, out, "quick", OVERRIDES, ARMS, None, budget=BUDGET, batches=BATCHES)
    return out


def test_every_cell_is_a_run_directory_and_the_rows_are_its_summary(grid: Path) -> None:
    part = read_realism(grid)
    assert part["cells"] == [c.name for c in cells(batches=BATCHES)] and len(part["cells"]) == 8
    rows = realism_rows(part)
    assert [(r["cell"], r["arm"]) for r in rows] == [(c, a) for c in part["cells"] for a in ARMS]
    for row in rows:
        summary = summarize(grid / "runs" / "realism" / row["cell"])["arms"][row["arm"]]["attacks"]
        scored = {name: s for name, s in summary.items() if s.get("count")}
        assert row["attack"] == max(scored, key=lambda name: scored[name]["psnr_mean"])
        stats = summary[row["attack"]]
        assert (row["psnr_mean"], row["ssim_mean"], row["count"]) == (stats["psnr_mean"], stats["ssim_mean"],
                                                                      stats["count"])
        assert row["recognisable"] == (stats["ssim_mean"] >= RECOGNISABLE_SSIM)
    # A plain ViT's FedSGD reply of one image is inverted exactly by april's closed form, at either stage.
    exact = [r for r in rows if r["arm"] == "vit" and r["training"] == "fedsgd" and r["batch"] == 1]
    assert [r["attack"] for r in exact] == ["april", "april"] and all(r["psnr_mean"] > 60 for r in exact)


def test_attacks_are_those_that_apply_and_fedavg_replies_carry_the_clients_settings(grid: Path) -> None:
    for name in read_realism(grid)["cells"]:
        records = [r for r in read_records(grid / "runs" / "realism" / name) if r.source == "server"]
        assert ("april" in {r.attack for r in records}) == name.endswith("fedsgd-b1")
        if "fedavg" in name:
            replay = [r.threat_model for r in records if r.attack == "ig"]
            assert replay and all(t["local_settings_source"] == "reported" for t in replay), replay
            arms = _resolved(grid, name)["arms"].values()
            assert all(a["training"]["optimizer"] == "sgd" and a["training"]["momentum"] == 0.9 for a in arms)


def test_trained_cells_start_from_the_accuracy_parts_final_weights(grid: Path) -> None:
    final = grid / "runs" / "accuracy" / "arms" / "mjp-0.25" / "final_weights.pt"
    trained = parse_scenario(json.loads(json.dumps(_resolved(grid, "trained-fedsgd-b1"))))
    init = parse_scenario(json.loads(json.dumps(_resolved(grid, "init-fedsgd-b1"))))
    assert trained.arms["mjp-0.25"].model.weights == str(final.resolve())
    assert init.arms["mjp-0.25"].model.weights is None
    from fedmjp.federation.workload import build_model

    loaded = build_model(trained.arms["mjp-0.25"]).state_dict()
    saved = torch.load(final, weights_only=True)
    assert all(torch.equal(loaded[k], saved[k]) for k in saved)
    assert not torch.equal(build_model(init.arms["mjp-0.25"]).state_dict()["pos_embed"], saved["pos_embed"])


def test_the_page_states_the_grid_and_where_recognisability_stops(grid: Path) -> None:
    part = read_realism(grid)
    rows = realism_rows(part)
    data = {"realism": part, "accuracy": {"vit": {0: 0.25}, "mjp-0.25": {0: 0.5}}}
    text = "\n".join(render_realism(data, rows))
    assert "every client holds 4 training examples" in text and "momentum 0.9" in text
    assert ("fedsgd: 1 reply, april, ig (steps 3, restarts 1), adaptive (steps 3, restarts 1); "
            "fedavg: 1 reply, ig (steps 2, restarts 1), adaptive (steps 2, restarts 1).") in text
    assert "test top-1 vit 0.250, mjp-0.25 0.500" in text
    table = [line for line in text.splitlines() if line.startswith("| trained") or line.startswith("| init")]
    assert len(table) == len(rows) == 16
    for line, row in zip(table, rows):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[3] == row["arm"] and cells[6] == f"{row['psnr_mean']:.2f}"
        assert cells[10] == ("yes" if row["recognisable"] else "no")
    for sentence in where_recognisability_stops(rows):
        assert f"- {sentence}" in text
    # A cell's seconds: the rounds of every arm in its run directory, as their metrics recorded them.
    seconds = {name: sum(row["seconds"] for arm in ARMS
                         for row in read_jsonl(grid / "runs" / "realism" / name / "arms" / arm / "metrics.jsonl"))
               for name in part["cells"]}
    assert all(value > 0 for value in seconds.values())
    assert ", ".join(f"{name} {value:.0f}" for name, value in seconds.items()) + "." in text


def test_the_recognisability_sentence_follows_its_rule() -> None:
    def row(batch: int, ok: bool | None) -> dict:
        return {"arm": "vit", "training": "fedsgd", "stage": "init", "batch": batch, "recognisable": ok}

    assert where_recognisability_stops([row(1, True), row(4, True), row(16, False)]) == [
        "vit, fedsgd, init: recognisable at batch 1, 4; not at 16"]
    assert where_recognisability_stops([row(1, True), row(4, True)]) == [
        "vit, fedsgd, init: recognisable at every batch size measured (1, 4)"]
    assert where_recognisability_stops([row(1, False), row(4, False)]) == [
        "vit, fedsgd, init: not recognisable at any batch size measured (1, 4)"]
    assert where_recognisability_stops([row(1, None)]) == ["vit, fedsgd, init: nothing scored"]


def _resolved(grid: Path, cell: str) -> dict:
    import yaml

    resolved = yaml.safe_load((grid / "runs" / "realism" / cell / "scenario.yaml").read_text())
    return {"name": resolved["name"], "arms": resolved["arms"]}


def test_the_rules_anchors_hold_on_real_photos() -> None:
    """The page justifies SSIM 0.3 by two anchors: the mid-grey image below it, a heavy blur above it."""
    import numpy as np
    from torchvision.transforms.functional import gaussian_blur

    from fedmjp.data.loading import load_dataset
    from fedmjp.scoring.metrics import leakage_metrics
    from fedmjp.results.realism import BLUR_SIGMA

    photos = load_dataset("photos", "test", 32, seed=0)
    picked = np.random.default_rng(0).choice(len(photos), 64, replace=False)
    images = torch.stack([photos[int(i)][0] for i in picked])
    grey = leakage_metrics(torch.full_like(images, 0.5), images, lpips=False)["ssim"]
    blur = leakage_metrics(gaussian_blur(images, 19, BLUR_SIGMA), images, lpips=False)
    assert grey < RECOGNISABLE_SSIM < blur["ssim"]
    assert blur["psnr"] > 15  # the blur is "close" by PSNR though it shows hardly an object


@pytest.mark.parametrize("setting", ["quick", "full"])
def test_every_cell_of_each_setting_is_a_valid_scenario_on_stored_images(setting: str) -> None:
    """The full accuracy part augments its clients' images; the grid's cells must not (their receipts score the
    stored images), whatever the setting."""
    from fedmjp.results.realism import ARMS as GRID_ARMS
    from fedmjp.results.realism import BUDGETS, cell_scenario

    for cell in cells(("init",)):  # trained cells differ only in model.weights (the fixture above)
        scenario = cell_scenario(DEFAULT_SCENARIO, setting, ["data.source=photos", "data.root=null"], cell,
                                 list(GRID_ARMS), {}, 10, None, BUDGETS[setting])
        assert all(not a.training.augment and a.training.lr_schedule == "constant" for a in scenario.arms.values())
        budget = {(a.clients.per_round, s.name, s.options.get("steps")) for a in scenario.arms.values()
                  for s in a.audit.attacks}
        if setting == "full":  # a replay attack unrolls a whole local epoch: FedAvg cells get a quarter
            replies, steps = (1, 100) if cell.training == "fedavg" else (2, 200)
            assert {(r, s) for r, name, s in budget if name != "april"} == {(replies, steps)}


def test_the_convergence_check_runs_a_cell_again_with_four_times_the_budget_and_marks_the_grid(grid: Path) -> None:
    from fedmjp.results.convergence import (CLOSED_FORM, FACTOR, NOT_CHECKED, PART, RESTARTS, RESTARTS_DIR,
                                            budget_reading, read_convergence)
    from fedmjp.results.realism import Cell

    for part, restarts in ((PART, None), (f"{PART}/{RESTARTS_DIR}", RESTARTS)):
        run_realism(DEFAULT_SCENARIO, grid, "quick", OVERRIDES, ARMS, None, budget=BUDGET, batches=BATCHES,
                    part=part, only=(Cell("init", "fedsgd", 4),), budget_factor=FACTOR, restarts=restarts)
    checks = read_convergence(grid)
    # adaptive needs an MJP arm: it is not applicable to the ViT, at either budget. On a batch its budget is its
    # gradient matching's steps (its refinement rounds refine one example only), which take restarts.
    assert {(c["cell"], c["arm"], c["attack"], c["budget"], c["budget_larger"], c["budget_restarts"])
            for c in checks} == {
        ("init-fedsgd-b4", "vit", "ig", "3 steps", "12 steps", f"12 steps, {RESTARTS} restarts"),
        ("init-fedsgd-b4", "mjp-0.25", "ig", "3 steps", "12 steps", f"12 steps, {RESTARTS} restarts"),
        ("init-fedsgd-b4", "mjp-0.25", "adaptive", "3 steps", "12 steps", f"12 steps, {RESTARTS} restarts")}
    for check in checks:
        for run_dir, key in ((grid / "runs" / PART, "larger"), (grid / "runs" / PART / RESTARTS_DIR, "restarts")):
            again = summarize(run_dir / "init-fedsgd-b4")["arms"][check["arm"]]["attacks"][check["attack"]]
            assert check[f"psnr_{key}"] == again["psnr_mean"] and check[f"ssim_{key}"] == again["ssim_mean"]
        moved = all(abs(check[f"psnr_{k}"] - check["psnr"]) < 1 and abs(check[f"ssim_{k}"] - check["ssim"]) < 0.02
                    for k in ("larger", "restarts"))
        assert check["converged"] == moved
    part = read_realism(grid) | {"convergence": checks}
    rows = {(r["cell"], r["arm"]): r for r in realism_rows(part)}
    assert rows["init-fedsgd-b1", "vit"]["budget"] == CLOSED_FORM  # april's closed form takes no steps
    assert rows["trained-fedavg-b4", "vit"]["budget"] == NOT_CHECKED
    checked = rows["init-fedsgd-b4", "mjp-0.25"]
    check = next(c for c in checks if (c["arm"], c["attack"]) == ("mjp-0.25", checked["attack"]))
    expected = "converged (4x:" if check["converged"] else "lower bound: still rising at 4x" \
        if max(check["psnr_larger"], check["psnr_restarts"]) >= check["psnr"] else "not converged: lower at 4x"
    assert checked["budget"].startswith(expected)
    text = "\n".join(render_realism({"realism": part, "accuracy": None}, list(rows.values())))
    table = "\n".join(render_convergence(checks))
    assert "## Is the attacker converged?" in table and "| init-fedsgd-b4 | vit | ig | 3 steps |" in table
    assert table.count(f"| 12 steps, {RESTARTS} restarts |") == len(checks) == 3
    # A reading states both moves.
    assert f"; 4x, {RESTARTS} restarts: " in budget_reading(checks, "init-fedsgd-b4", "vit", "ig", True)
    unsure = [r for r in rows.values() if r["recognisable"] is False and r["budget"].startswith("lower bound")]
    if unsure:
        assert "was not shown converged: more budget may make it recognisable" in text
    # A stopped check (an arm without its final weights) counts the arms it finished only.
    weights = grid / "runs" / PART / "init-fedsgd-b4" / "arms" / "vit" / "final_weights.pt"
    weights.rename(weights.with_suffix(".kept"))
    try:
        assert {c["arm"] for c in read_convergence(grid)} == {"mjp-0.25"}
    finally:
        weights.with_suffix(".kept").rename(weights)
