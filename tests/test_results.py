"""``fedmjp results``: the headline table is recomputed from the run directories and reads honestly.

The fast tests build the two run directories the way a run writes them (resolved scenario, per-round
metrics, audit records scored with the real leakage metrics on a real photograph); the slow test runs a
reduced quick setting for real.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
import zlib
from pathlib import Path

import pytest
import torch
import yaml

from fedmjp.audit import AuditRecord, AuditStore
from fedmjp.audit.summary import SERVER, read_records, summarize
from fedmjp.scoring.metrics import leakage_metrics
from fedmjp.results import (CONTENT_NOT_REDUCED, COLUMNS, EXACT_DB, MARGIN_DB, NO_REDUCTION, REDUCED,
                            WORST_NOT_REDUCED, judge)
from fedmjp.results import collect, rows, strength_figure, write_results
from fedmjp.federation.rundir import atomic_json, atomic_write, versions
from tests.flower_runs import finish

ROUNDS = (1, 2)
# arm -> attack -> reconstruction noise per round (lower noise: more leakage). The ViT leaks most under
# april; "leaky" leaks more than the ViT; "half" leaks less on average but as much in its worst round.
NOISE = {
    "vit": {"april": (0.05, 0.05), "ig": (0.2, 0.2)},
    "mjp-0.25": {"april": (0.5, 0.5), "ig": (0.3, 0.3), "adaptive": (0.15, 0.15)},
    "half": {"april": (0.02, 0.6), "ig": (0.25, 0.25), "adaptive": (0.01, 0.01)},
    "leaky": {"april": (0.03, 0.03), "ig": (0.2, 0.2)},
    # april: every patch, in shuffled places, at a lower mean PSNR than ig (the strongest by the mean)
    "naive": {"april": (0.01, 0.01), "ig": (0.12, 0.12)},
}
SHUFFLED = {("naive", "april")}
# Replies the client computed with the jigsaw applied, per MJP arm and round: "half" (apply_prob 0.5)
# sent a plain gradient in round 1, the round in which it leaks.
JIGSAW = {"mjp-0.25": (True, True), "half": (False, True), "naive": (True, True)}
ARM_SETTINGS = {
    "vit": {},
    "mjp-0.25": {"model": {"name": "mjp_vit_tiny_patch4_32", "mjp": {"ratio": 0.25}}},
    "half": {"model": {"name": "mjp_vit_tiny_patch4_32", "mjp": {"ratio": 0.25, "apply_prob": 0.5}}},
    "leaky": {"defence": {"dp": {"clipping_norm": 1.0, "epsilon": 1000.0, "delta": 1e-5}}},
    "naive": {"model": {"name": "mjp_vit_tiny_patch4_32", "mjp": {"ratio": 0.25, "mode": "naive"}}},
}
ACCURACY = {"vit": 0.41, "mjp-0.25": 0.38, "half": 0.40, "leaky": 0.12, "naive": 0.39}


def _shuffle_patches(image: torch.Tensor, patch: int = 4) -> torch.Tensor:
    """The image with its patches in a fixed random order (what APRIL returns for a naive shuffle)."""
    _, c, h, w = image.shape
    patches = image.reshape(c, h // patch, patch, w // patch, patch).permute(1, 3, 0, 2, 4).reshape(-1, c, patch, patch)
    order = torch.randperm(len(patches), generator=torch.Generator().manual_seed(0))
    grid = patches[order].reshape(h // patch, w // patch, c, patch, patch)
    return grid.permute(2, 0, 3, 1, 4).reshape(1, c, h, w)


def _photo() -> torch.Tensor:
    from skimage import data
    from torch.nn.functional import interpolate

    img = torch.from_numpy(data.astronaut()).permute(2, 0, 1).float().div(255).unsqueeze(0)
    return interpolate(img, size=(32, 32), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)


def _arm(name: str, mode: str) -> dict:
    base = {"seed": 0, "name": name, "training": {"mode": mode, "batch_size": 1 if mode == "fedsgd" else 32,
                                                  "rounds": len(ROUNDS)},
            "model": {"name": "vit_tiny_patch4_32", "kwargs": {"depth": 2}}}
    for key, value in ARM_SETTINGS[name].items():
        base[key] = {**base.get(key, {}), **value}
    return base


def _write_part(run_dir: Path, mode: str, scored: bool) -> None:
    scenario = {"name": f"results-test-{mode}", "arms": {arm: _arm(arm, mode) for arm in NOISE}}
    atomic_write(run_dir / "scenario.yaml", yaml.safe_dump(scenario, sort_keys=False).encode())
    atomic_json(run_dir / "versions.json", versions())
    store = AuditStore(run_dir)
    truth = _photo()
    for arm, attacks in NOISE.items():
        accuracy = ACCURACY[arm] if not scored else 0.1
        lines = [{"round": r, "accuracy": accuracy * r / len(ROUNDS), "loss": 2.0, "clients": 1} for r in ROUNDS]
        atomic_write(run_dir / "arms" / arm / "metrics.jsonl", "".join(json.dumps(x) + "\n" for x in lines).encode())
        if not scored:
            continue
        for attack, noises in attacks.items():
            for rnd, sigma in zip(ROUNDS, noises):
                generator = torch.Generator().manual_seed(zlib.crc32(f"{arm}-{attack}-{rnd}".encode()))
                recon = (truth + sigma * torch.randn(truth.shape, generator=generator)).clamp(0, 1)
                if (arm, attack) in SHUFFLED:
                    recon = _shuffle_patches(recon)
                store.append(AuditRecord(
                    arm=arm, round=rnd, partition_id=0, attack=attack, status="scored", num_examples=1,
                    shuffled_steps=[JIGSAW[arm][rnd - 1]] if arm in JIGSAW else [], source="server",
                    metrics=leakage_metrics(recon, truth, patch=4, labels_true=[0], labels_pred=[0], lpips=False)))
        if "adaptive" not in attacks:  # the MJP-aware attacker does not apply to a model without MJP
            store.append(AuditRecord(arm=arm, round=1, partition_id=0, attack="adaptive", status="not-applicable",
                                     reason="not an MJP model"))


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("results")
    _write_part(out / "runs" / "privacy", "fedsgd", scored=True)
    _write_part(out / "runs" / "accuracy", "fedavg", scored=False)
    write_results(out)
    return out


def table_rows(markdown: str, header_start: str) -> list[dict[str, str]]:
    """The rows of the markdown table whose header begins with ``header_start``, as dicts."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {header_start}"))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(header, (c.strip() for c in line.strip("|").split("|")))))
    return rows


def test_table_has_every_arm_attack_and_metric_with_the_summary_numbers(results: Path) -> None:
    summary = summarize(results / "runs" / "privacy")
    accuracy = summarize(results / "runs" / "accuracy")
    rows = table_rows((results / "results.md").read_text(), "arm | defence")
    assert {(r["arm"], r["attack"]) for r in rows} == {(arm, attack) for arm, entry in summary["arms"].items()
                                                       for attack in entry["attacks"]}
    for row in rows:
        stats = summary["arms"][row["arm"]]["attacks"][row["attack"]]
        assert int(row["scored"]) == stats["count"]
        for header, key, digits in COLUMNS:
            expected = "–" if key not in stats else f"{stats[key]:.{digits}f}"
            assert row[header] == expected, (row["arm"], row["attack"], header)
        assert row["test top-1"] == f"{accuracy['arms'][row['arm']]['accuracy_final']:.3f}"


def test_an_exact_worst_case_is_not_reduced_whatever_its_decibels() -> None:
    ref = {"count": 6, "psnr_mean": 100.0, "psnr_max": 100.0, "patch_psnr_mean": 100.0}
    # One reply of six sent without the jigsaw, recovered at 94.6 dB: as exact as the ViT's 100 dB.
    half = {"count": 6, "psnr_mean": 33.6, "psnr_max": 94.6, "patch_psnr_mean": 35.1}
    assert judge(half, ref, is_reference=False) == WORST_NOT_REDUCED
    assert judge({**half, "psnr_max": 40.0}, ref, is_reference=False) == REDUCED


def test_shuffled_replies_count_the_replies_sent_with_the_jigsaw_applied(results: Path) -> None:
    rows = table_rows((results / "results.md").read_text(), "arm | defence")
    got = {r["arm"]: r["shuffled replies"] for r in rows}
    assert got == {"vit": "–", "leaky": "–", "mjp-0.25": "2/2", "half": "1/2", "naive": "2/2"}


def test_the_accuracy_column_comes_from_the_accuracy_part(results: Path) -> None:
    rows = table_rows((results / "results.md").read_text(), "arm | defence")
    assert {r["arm"]: r["test top-1"] for r in rows} == {arm: f"{acc:.3f}" for arm, acc in ACCURACY.items()}


def test_no_reduction_is_said_exactly_where_the_arm_leaks_at_least_as_much_as_the_vit(results: Path) -> None:
    summary = summarize(results / "runs" / "privacy")["arms"]
    vit = summary["vit"]["attacks"]
    vit_best = max((a for a in vit if vit[a]["count"]), key=lambda a: vit[a]["psnr_mean"])
    rows = table_rows((results / "results.md").read_text(), "arm | defence")
    seen = set()
    for row in rows:
        stats = summary[row["arm"]]["attacks"][row["attack"]]
        if row["arm"] == "vit" and stats["count"]:
            assert row["reading"] == "reference"
            continue
        if not stats["count"]:
            assert row["reading"].startswith("not applicable")
            continue
        ref = vit[row["attack"]] if vit.get(row["attack"], {}).get("count") else vit[vit_best]
        not_below = stats["psnr_mean"] >= ref["psnr_mean"]
        def kept(key: str) -> bool:
            return stats[key] > ref[key] - MARGIN_DB or min(stats[key], ref[key]) >= EXACT_DB

        worst = not not_below and kept("psnr_max")
        content = not (not_below or worst) and kept("patch_psnr_mean")
        assert row["reading"].startswith(NO_REDUCTION) == not_below, row
        assert row["reading"].startswith(WORST_NOT_REDUCED) == worst, row
        assert row["reading"].startswith(CONTENT_NOT_REDUCED) == content, row
        reduced = not (not_below or worst or content) and stats["psnr_mean"] <= ref["psnr_mean"] - MARGIN_DB
        assert row["reading"].startswith(REDUCED) == reduced, row
        assert float(row["Δ PSNR vs ViT"]) == pytest.approx(stats["psnr_mean"] - ref["psnr_mean"], abs=0.006)
        seen.add((row["arm"], row["attack"], not_below, worst))
    # The fixture covers all three readings, and the MJP-aware attacker is compared with the ViT's strongest.
    assert ("leaky", "april", True, False) in seen and ("half", "april", False, True) in seen
    assert ("mjp-0.25", "april", False, False) in seen
    naive = next(r for r in rows if (r["arm"], r["attack"]) == ("naive", "april"))
    assert naive["reading"] == CONTENT_NOT_REDUCED and float(naive["Δ PSNR vs ViT"]) < -5
    adaptive = next(r for r in rows if (r["arm"], r["attack"]) == ("half", "adaptive"))
    assert adaptive["reading"] == f"{NO_REDUCTION} ({vit_best})"


def test_strongest_attack_table_and_figures_are_written(results: Path) -> None:
    text = (results / "results.md").read_text()
    strongest = {r["arm"]: r for r in table_rows(text, "arm | strongest attack")}
    assert list(strongest) == list(NOISE)
    assert strongest["half"]["strongest attack"] == "adaptive" and strongest["half"]["reading"].startswith(NO_REDUCTION)
    # naive's strongest attack by the mean is ig; april's flag (every patch leaked) is named beside it.
    assert strongest["naive"]["strongest attack"] == "ig"
    assert f"april: {CONTENT_NOT_REDUCED}" in strongest["naive"]["reading"]
    for name in ("leakage_vs_accuracy.png", "leakage_over_rounds.png", "defence_strength.png"):
        assert (results / name).read_bytes().startswith(b"\x89PNG") and f"]({name})" in text
    assert "local DP C 1, ε 1000" in text  # the defence column is read from the resolved arm
    data = json.loads((results / "results.json").read_text())
    assert {r["arm"] for r in data["rows"]} == set(NOISE)


def test_the_strength_figure_shows_accuracy_on_its_whole_range(results: Path) -> None:
    """A free right axis made a 0.004 accuracy difference look like a cliff beside the leakage curves."""
    data = collect(results)
    figure = strength_figure(data, rows(data))
    twins = [ax for ax in figure.axes if ax.get_ylabel().startswith("test top-1")]
    assert twins and all(ax.get_ylim() == (0, 1) for ax in twins)


def test_the_readme_table_is_the_published_full_results_table() -> None:
    """The README shows the strongest-attack table of docs/results/results.md (written by `fedmjp results`),
    arm names spelled out; every other cell must be the same."""
    root = Path(__file__).resolve().parent.parent
    readme = table_rows((root / "README.md").read_text(), "arm | strongest attack")
    published = table_rows((root / "docs" / "results" / "results.md").read_text(), "arm | strongest attack")
    assert len(readme) == len(published) > 0
    for shown, source in zip(readme, published):
        assert {k: v for k, v in shown.items() if k != "arm"} == {k: source[k] for k in shown if k != "arm"}


# --------------------------------------------------------------------------- accuracy over seeds

# arm -> final top-1 per seed (0, 1, 2): mjp-0.25 within the seeds' noise of the ViT, "leaky" always lower;
# the Dirichlet pair is compared with the Dirichlet ViT, not the IID one.
SEED_ACCURACY = {
    "vit": (0.42, 0.45, 0.40),
    "mjp-0.25": (0.43, 0.41, 0.42),
    "leaky": (0.30, 0.33, 0.28),
    "vit-dirichlet": (0.30, 0.26, 0.28),
    "mjp-0.25-dirichlet": (0.29, 0.27, 0.26),
}
DIRICHLET_SPLIT = {"data": {"partitioning": {"method": "dirichlet", "alpha": 0.3}}}


def _write_seed(run_dir: Path, seed: int) -> None:
    arms = {}
    for arm in SEED_ACCURACY:
        base = arm.removesuffix("-dirichlet")
        arms[arm] = {**_arm(base, "fedavg"), "name": arm, "seed": seed,
                     **(DIRICHLET_SPLIT if arm.endswith("-dirichlet") else {})}
    atomic_write(run_dir / "scenario.yaml", yaml.safe_dump({"name": "acc", "arms": arms}, sort_keys=False).encode())
    for arm, finals in SEED_ACCURACY.items():
        lines = [{"round": r, "accuracy": finals[seed] * r / len(ROUNDS), "loss": 2.0} for r in ROUNDS]
        atomic_write(run_dir / "arms" / arm / "metrics.jsonl", "".join(json.dumps(x) + "\n" for x in lines).encode())


@pytest.fixture(scope="module")
def seeded_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("seeded")
    _write_part(out / "runs" / "privacy", "fedsgd", scored=True)
    atomic_json(out / "runs" / "accuracy" / "seeds.json", {"seeds": [0, 1, 2]})
    for seed in (0, 1, 2):
        _write_seed(out / "runs" / "accuracy" / f"seed-{seed}", seed)
    write_results(out)
    return out


def test_accuracy_table_has_mean_interval_and_paired_test_over_seeds(seeded_results: Path) -> None:
    from fedmjp.scoring.stats import paired_p, t_interval

    text = (seeded_results / "accuracy.md").read_text()
    assert "| arm | seeds | top-1 mean | 95% CI low | 95% CI high | p vs ViT | reading |" in text
    table = {r["arm"]: r for r in table_rows(text, "arm | seeds")}
    assert list(table) == list(SEED_ACCURACY)
    for arm, finals in SEED_ACCURACY.items():
        row, (mean, low, high) = table[arm], t_interval(finals)
        assert row["seeds"] == "3"
        assert (row["top-1 mean"], row["95% CI low"], row["95% CI high"]) == (f"{mean:.3f}", f"{low:.3f}", f"{high:.3f}")
        reference = SEED_ACCURACY["vit-dirichlet" if arm.endswith("-dirichlet") else "vit"]
        if arm in ("vit", "vit-dirichlet"):
            assert row["p vs ViT"] == "–" and row["reading"] == "reference"
        else:
            assert row["p vs ViT"] == f"{paired_p(finals, reference):.3f}"
    assert table["mjp-0.25"]["reading"] == "no significant difference at 3 seeds"
    assert table["leaky"]["reading"].startswith("lower than ViT (p < 0.05, 3 seeds)")
    assert table["mjp-0.25-dirichlet"]["reading"] == "no significant difference at 3 seeds (vs vit-dirichlet)"
    per_seed = {r["arm"]: r for r in table_rows(text, "arm | seed 0")}
    assert per_seed["leaky"] == {"arm": "leaky", "seed 0": "0.300", "seed 1": "0.330", "seed 2": "0.280"}


def test_an_arm_that_did_not_finish_its_rounds_in_a_seed_is_left_out_of_that_seed(seeded_results: Path,
                                                                                   tmp_path: Path) -> None:
    import shutil

    out = Path(shutil.copytree(seeded_results, tmp_path / "partial"))
    metrics = out / "runs" / "accuracy" / "seed-2" / "arms" / "leaky" / "metrics.jsonl"
    metrics.write_text(metrics.read_text().splitlines()[0] + "\n")  # round 1 of 2: still running
    write_results(out)
    table = {r["arm"]: r for r in table_rows((out / "accuracy.md").read_text(), "arm | seeds")}
    assert table["leaky"]["seeds"] == "2" and table["vit"]["seeds"] == "3"
    assert table["leaky"]["top-1 mean"] == f"{(0.30 + 0.33) / 2:.3f}"


def test_results_take_the_mean_over_seeds_and_draw_the_curves_with_a_band(seeded_results: Path) -> None:
    rows_ = table_rows((seeded_results / "results.md").read_text(), "arm | strongest attack")
    by_arm = {r["arm"]: r for r in rows_}
    assert by_arm["vit"]["test top-1"] == f"{sum(SEED_ACCURACY['vit']) / 3:.3f}"
    assert by_arm["half"]["test top-1"] == "–"  # not trained in the accuracy part
    assert "mean over 3 seeds" in (seeded_results / "results.md").read_text()
    assert (seeded_results / "accuracy_over_rounds.png").read_bytes().startswith(b"\x89PNG")
    from fedmjp.results.figures import accuracy_curves_figure

    figure = accuracy_curves_figure(collect(seeded_results)["curves"])
    ax = figure.axes[0]
    assert len(ax.lines) == len(SEED_ACCURACY) and len(ax.collections) == len(SEED_ACCURACY)  # a band per arm


def test_the_docs_accuracy_table_is_the_published_accuracy_table() -> None:
    """The results page's accuracy over seeds is docs/results/accuracy.md's table (written by `fedmjp results`)."""
    root = Path(__file__).resolve().parent.parent
    readme = table_rows((root / "docs" / "results.md").read_text(), "arm | seeds")
    published = table_rows((root / "docs" / "results" / "accuracy.md").read_text(), "arm | seeds")
    assert readme == published and len(published) > 0


# --------------------------------------------------------------------------- a real, reduced quick run


@pytest.mark.slow
def test_quick_results_from_a_real_run_have_the_selected_arms_and_metrics(tmp_path: Path, ray_cluster: str) -> None:
    out = tmp_path / "results"
    mark = uuid.uuid4().hex
    # A relative --out, as `make results` passes it (the ServerApp runs in another working directory).
    command = [sys.executable, "-m", "fedmjp", "results", "--quick", "--out", "results",
               "--arms", "vit,mjp-0.25,dp-eps1e3", "--seeds", "0,1",
               "--set", "data.source=photos", "--set", "data.root=null", "--set", "privacy:data.test_limit=40",
               "--set", "privacy:audit.attacks=[{name: april}, {name: adaptive, options: {rounds: 5}}]",
               "--set", "accuracy:training.rounds=1", "--set", "accuracy:training.local_steps=2",
               "--set", "realism:audit.attacks=[{name: ig, options: {steps: 2, restarts: 1}}]",
               "--set", "realism:data.test_limit=20", "--ray-address", ray_cluster,
               # The secure-aggregation part (32 Flower arms) has a test of its own: tests/test_secure_aggregation.py.
               "--parts", "privacy,accuracy,dishonest,detector,realism,convergence"]
    process = subprocess.Popen(command, env={**os.environ, "FEDMJP_TEST_MARK": mark}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True, cwd=tmp_path)
    stdout = finish(process, mark)
    assert stdout.strip().endswith("results: results/results.md")
    text = (out / "results.md").read_text()
    summary = summarize(out / "runs" / "privacy")
    rows = table_rows(text, "arm | defence")
    assert [r["arm"] for r in rows if r["attack"] == "april"] == ["vit", "mjp-0.25", "dp-eps1e3"]
    for row in rows:
        stats = summary["arms"][row["arm"]]["attacks"][row["attack"]]
        assert row["PSNR mean (dB)"] == ("–" if "psnr_mean" not in stats else f"{stats['psnr_mean']:.2f}")
        # dp-eps1e3 is not one of the accuracy part's arms
        assert re.fullmatch(r"\d\.\d{3}" if row["arm"] != "dp-eps1e3" else "–", row["test top-1"])
    april = {r["arm"]: r for r in rows if r["attack"] == "april"}
    assert float(april["vit"]["PSNR mean (dB)"]) > 60  # a plain ViT hands over its image
    assert float(april["mjp-0.25"]["PSNR mean (dB)"]) < 30 and float(april["dp-eps1e3"]["PSNR mean (dB)"]) < 30
    assert {a: r["shuffled replies"] for a, r in april.items()} == {"vit": "–", "mjp-0.25": "4/4", "dp-eps1e3": "–"}
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["setting"] == "quick" and \
        set(provenance["seconds"]) == {"privacy", "accuracy", "dishonest", "detector", "realism", "convergence"}
    # The two Flower parts ran as one sweep: one shared time, said so.
    assert provenance["one_sweep"] == ["privacy", "accuracy"]
    assert provenance["seconds"]["privacy"] == provenance["seconds"]["accuracy"]
    assert f"privacy and accuracy parts {provenance['seconds']['privacy'] / 60:.1f} min (one sweep" in text
    # The dishonest server's part: the same arms, imprint at batch 1 and 8; DP is not measured outside Flower.
    dishonest = table_rows(text, "arm | defence | batch")
    assert [(r["arm"], r["batch"]) for r in dishonest] == [(a, b) for a in ("vit", "mjp-0.25", "dp-eps1e3")
                                                           for b in ("1", "8")]
    assert float(dishonest[0]["patches exact"]) >= 0.8 and dishonest[0]["client check"] == "2/2"
    # The client's check as a detector: every construction against the ViT and MJP 0.25, and honest models.
    detector = table_rows(text, "construction | arm | batch")
    assert [(r["construction"], r["arm"]) for r in detector] == [
        (c, a) for a in ("vit", "mjp-0.25") for c in ("imprint", "imprint, knows the original check",
                                                      "imprint, knows the current check", "trap weights")]
    assert all(r["refused, first round"] == "1/1" for r in detector if "current" not in r["construction"])
    assert re.search(r"False alarms of the current check over \d+ honest models, [^:]*: 0 in a first round", text)
    honest = {r["honest models"].partition(" (")[0]: r for r in table_rows(text, "honest models | checked")}
    assert set(honest) == {"random init", "FedAvg, Adam lr 3e-3", "accuracy part, trained"}
    assert all(r["false alarms, first round"] == "0" for r in honest.values())
    assert dishonest[-1]["patches exact"] == "–" and dishonest[-1]["reading"].startswith("not applicable")
    recorded = json.loads((out / "results.json").read_text())["dishonest"]
    assert [(r["arm"], r["batch"]) for r in recorded] == [(r["arm"], int(r["batch"])) for r in dishonest]
    assert "commit:" in text and "machine:" in text
    # The grid of where users train: the arms of it selected, both stages (the accuracy part ran), the
    # numbers those of each cell's run directory.
    grid = table_rows(text, "stage | training | batch")
    assert len(grid) == 2 * 2 * 3 * 2 and {r["arm"] for r in grid} == {"vit", "mjp-0.25"}
    for row in grid:
        cell = out / "runs" / "realism" / f"{row['stage']}-{row['training']}-b{row['batch']}"
        stats = summarize(cell)["arms"][row["arm"]]["attacks"][row["strongest attack"]]
        assert row["matched PSNR (dB)"] == f"{stats['psnr_mean']:.2f}" and row["SSIM"] == f"{stats['ssim_mean']:.3f}"
    assert len(json.loads((out / "results.json").read_text())["realism"]) == len(grid)
    # The convergence check: the privacy part's sampled arms again through Flower and the grid's sampled cell,
    # with 4x the budget (ig's steps 2 -> 8; adaptive's refinement rounds 5 -> 20) on the same replies (the
    # clients' images score the same mid-grey baseline); the tables' rows say which budget they rest on.
    # The sampled cell ran again at 4x with 4 restarts too; the privacy part's adaptive attack refines one
    # example from one noise draw, so its check of more restarts had nothing to run (no run directory).
    checks = table_rows(text, "part or cell | arm | attack | budget")
    assert {(r["part or cell"], r["arm"], r["attack"], r["budget"], r["budget x4"], r["budget with restarts"])
            for r in checks} == {
        *(("init-fedsgd-b1", arm, "ig", "2 steps", "8 steps", "8 steps, 4 restarts") for arm in ("vit", "mjp-0.25")),
        ("privacy", "mjp-0.25", "adaptive", "5 rounds", "20 rounds", "–")}
    assert not (out / "runs" / "convergence" / "restarts" / "privacy").exists()
    for row in checks:
        cell = row["part or cell"]
        published = out / "runs" / ("privacy" if cell == "privacy" else f"realism/{cell}")
        larger = out / "runs" / "convergence" / cell
        restarted = out / "runs" / "convergence" / "restarts" / cell
        for run_dir, column in ((published, "PSNR (dB)"), (larger, "PSNR x4 (dB)"),
                                (restarted, "PSNR with restarts (dB)")):
            if run_dir.is_dir():
                stats = summarize(run_dir)["arms"][row["arm"]]["attacks"][row["attack"]]
                assert row[column] == f"{stats['psnr_mean']:.2f}"
        baselines = [sorted(r.baseline["psnr"] for r in read_records(run_dir) if r.source == SERVER and
                            r.status == "scored" and r.arm == row["arm"]) for run_dir in (published, larger)]
        assert baselines[0] == baselines[1] and baselines[0]
    headline = {(r["arm"], r["attack"]): r["attack budget"] for r in rows}
    assert headline["vit", "april"] == "closed form" and headline["vit", "adaptive"] == "–"  # not applicable
    assert headline["mjp-0.25", "adaptive"].startswith(("converged (4x:", "lower bound: still rising at 4x (4x:",
                                                         "not converged: lower at 4x (4x:"))
    budgets = {(r["stage"], r["training"], r["batch"], r["arm"]): r["attack budget"] for r in grid}
    assert budgets["init", "fedsgd", "1", "vit"].startswith(("converged (4x:", "lower bound: still rising at 4x (4x:", "not converged: lower at 4x (4x:"))
    assert budgets["trained", "fedavg", "16", "vit"] == "lower bound: not checked at 4x"
    accuracy = {r["arm"]: r for r in table_rows((out / "accuracy.md").read_text(), "arm | seeds")}
    assert list(accuracy) == ["vit", "mjp-0.25"] and accuracy["mjp-0.25"]["seeds"] == "2"


# --------------------------------------------------------------------------- the command


def test_report_only_rewrites_the_results_from_the_run_directories(results: Path) -> None:
    from typer.testing import CliRunner

    import fedmjp.commands.results  # noqa: F401  (registers the command)
    from fedmjp.cli import app

    (results / "results.md").unlink()
    done = CliRunner().invoke(app, ["results", "--report-only", "--out", str(results)])
    assert done.exit_code == 0, done.output
    assert done.stdout.strip() == f"results: {results / 'results.md'}" and (results / "results.md").is_file()


@pytest.mark.parametrize("args, message", [
    (["--arms", "vit,nope"], "--arms: unknown arm 'nope'"),
    (["--report-only", "--quick"], "--report-only rewrites existing results"),
    (["--parts", "privacy,grid"], "--parts: unknown part 'grid' (choose from privacy, accuracy, dishonest, detector, realism, secure, convergence)"),
    (["--set", "defence.prune=2"], "results-cifar10.yaml: defence.prune: Input should be less than 1"),
])
def test_bad_input_exits_2_with_one_line_and_runs_nothing(tmp_path: Path, args: list[str], message: str) -> None:
    from typer.testing import CliRunner

    import fedmjp.commands.results  # noqa: F401
    from fedmjp.cli import app

    done = CliRunner().invoke(app, ["results", "--out", str(tmp_path / "out"), *args])
    assert done.exit_code == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert not (tmp_path / "out").exists()


def test_parts_runs_only_those_into_an_earlier_run_and_keeps_its_provenance(results: Path, tmp_path: Path) -> None:
    """``--parts dishonest`` into the output of an earlier run: the other parts stay as they were, the
    provenance keeps their times and gives the later part its own command, commit and load (a real imprint
    run, in this process, on the photos that ship with scikit-image)."""
    from typer.testing import CliRunner

    import fedmjp.commands.results  # noqa: F401
    from fedmjp.cli import app

    out = tmp_path / "out"
    shutil.copytree(results, out)
    before = {p: p.read_bytes() for p in (out / "runs").rglob("*") if p.is_file()}
    atomic_json(out / "provenance.json", {"setting": "quick", "command": "fedmjp results --quick --out out",
                                          "commit": "0123abc", "seconds": {"privacy": 60.0, "accuracy": 120.0}})
    done = CliRunner().invoke(app, ["results", "--quick", "--out", str(out), "--parts", "dishonest",
                                    "--arms", "vit,mjp-0.25", "--set", "data.source=photos", "--set", "data.root=null",
                                    "--set", "privacy:data.test_limit=40"])
    assert done.exit_code == 0, done.output
    assert all(path.read_bytes() == data for path, data in before.items())
    assert {a["arm"] for a in json.loads((out / "runs" / "dishonest" / "rows.json").read_text())["rows"]} == {
        "vit", "mjp-0.25"}
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["command"] == "fedmjp results --quick --out out" and provenance["commit"] == "0123abc"
    assert set(provenance["seconds"]) == {"privacy", "accuracy", "dishonest"} and provenance["seconds"]["dishonest"] > 0
    later = provenance["parts"]
    assert list(later) == ["dishonest"] and "--parts dishonest" in later["dishonest"]["command"]
    text = (out / "results.md").read_text()
    assert "dishonest part run later: `fedmjp results --quick" in text
    assert "wall time: privacy part 1.0 min, accuracy part 2.0 min, dishonest part" in text
    # A part that has run already is not run again, and the earlier run's setting is kept.
    again = CliRunner().invoke(app, ["results", "--quick", "--out", str(out), "--parts", "dishonest"])
    assert again.exit_code == 2 and "runs/dishonest exists and is not empty" in again.stderr
    other = CliRunner().invoke(app, ["results", "--out", str(out), "--parts", "realism"])
    assert other.exit_code == 2 and "holds results of the quick setting, not the full one" in other.stderr
