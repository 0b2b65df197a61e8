"""``fedmjp audit``: the summary, the command and the HTML report, on a real run directory.

The run directory is built the way a run writes it: resolved scenario, versions, per-round metrics, and
audit records scored with the real leakage metrics on a real photograph and noisy reconstructions of it.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import stat
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

import fedmjp.commands.audit  # noqa: F401  (registers the command)
from fedmjp.audit import AuditRecord, AuditStore
from fedmjp.audit.report import spread
from fedmjp.audit.summary import leakage_by_round, summarize
from fedmjp.cli import app
from fedmjp.scoring.metrics import leakage_metrics
from fedmjp.federation.rundir import atomic_json, atomic_write, versions

runner = CliRunner()

ARMS = {"vit": 0.10, "mjp": 0.35}  # arm -> reconstruction noise: MJP leaks less
ATTACKS = ("april", "inverting")
ROUNDS = (1, 2, 3)
CLIENTS = (0, 1)
ACCURACY = {"vit": [0.21, 0.34, 0.47], "mjp": [0.19, 0.31, 0.44]}
CHROMIUM_TIMEOUT = 120


def _photo(seed: int) -> torch.Tensor:
    """scikit-image's astronaut at 32 px, shifted per client so clients hold different images."""
    from skimage import data
    from torch.nn.functional import interpolate

    img = torch.from_numpy(data.astronaut()).permute(2, 0, 1).float().div(255).unsqueeze(0)
    img = torch.roll(img, shifts=seed * 64, dims=-1)
    return interpolate(img, size=(32, 32), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)


def _scored(store: AuditStore, arm: str, rnd: int, pid: int, attack: str, noise: float) -> AuditRecord:
    generator = torch.Generator().manual_seed(zlib.crc32(f"{arm}-{rnd}-{pid}-{attack}".encode()))
    truth = _photo(pid)
    # Later rounds and the optimisation attack leak differently, so means and maxima differ.
    sigma = noise * (1 + 0.3 * rnd) * (1.5 if attack == "inverting" else 1.0)
    recon = (truth + sigma * torch.randn(truth.shape, generator=generator)).clamp(0, 1)
    start = torch.full_like(truth, 0.5)  # the data-free starting image
    name = f"r{rnd:03d}-p{pid}-{attack}"
    return AuditRecord(
        arm=arm, round=rnd, partition_id=pid, attack=attack, status="scored", num_examples=1,
        metrics=leakage_metrics(recon, truth, patch=4, labels_true=[pid], labels_pred=[pid], lpips=False),
        baseline=leakage_metrics(start, truth, patch=4, lpips=False),
        seconds=0.5 + rnd + pid, image=store.save_images(arm, name, recon),
        truth_image=store.save_images(arm, f"{name}-truth", truth), labels_recovered=[pid],
    )


def _write_run(run_dir: Path) -> list[AuditRecord]:
    scenario = {"name": "audit-test", "arms": {arm: {"seed": 0, "model": {"name": "vit_tiny_patch4_32"}}
                                               for arm in ARMS}}
    atomic_write(run_dir / "scenario.yaml", yaml.safe_dump(scenario, sort_keys=False).encode())
    atomic_json(run_dir / "versions.json", versions())
    store = AuditStore(run_dir)
    records: list[AuditRecord] = []
    for arm, noise in ARMS.items():
        lines = [{"round": r, "accuracy": acc, "loss": 2.0 - acc, "train_loss": 2.1 - acc, "clients": 2,
                  "seconds": 1.5} for r, acc in zip(ROUNDS, ACCURACY[arm])]
        atomic_write(run_dir / "arms" / arm / "metrics.jsonl", "".join(json.dumps(x) + "\n" for x in lines).encode())
        for rnd in ROUNDS:
            for pid in CLIENTS:
                records += [_scored(store, arm, rnd, pid, attack, noise) for attack in ATTACKS]
        records.append(AuditRecord(arm=arm, round=1, partition_id=0, attack="april", status="not-applicable",
                                   reason="batch size 2 > 1"))
        records.append(AuditRecord(arm=arm, round=2, partition_id=1, attack="inverting", status="failed",
                                   reason="optimizer diverged"))
    # As the round's auditor writes them: a guard that noised its reply, and one that withheld it.
    records.append(AuditRecord(arm="mjp", round=1, partition_id=0, attack="april", status="scored",
                               source="client-guard", metrics={"psnr": 11.0}, reason="noise"))
    records.append(AuditRecord(arm="mjp", round=1, partition_id=1, attack="april", status="withheld",
                               source="client-guard", reason="withheld by client guard: april PSNR 99.0 dB > 30.0"))
    for record in records:
        store.append(record)
    return records


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[AuditRecord]]:
    """A run directory shared by the read-only tests (building it scores 48 reconstructions)."""
    run_dir = tmp_path_factory.mktemp("run")
    return run_dir, _write_run(run_dir)


@pytest.fixture
def run_copy(run: tuple[Path, list[AuditRecord]], tmp_path: Path) -> Path:
    """A private copy for tests that damage the run directory."""
    return Path(shutil.copytree(run[0], tmp_path / "run"))


@pytest.fixture(scope="module")
def report(run: tuple[Path, list[AuditRecord]]) -> Path:
    result = runner.invoke(app, ["audit", str(run[0])])
    assert result.exit_code == 0, result.output
    return run[0] / "report.html"


def _by_hand(records: list[AuditRecord], arm: str, attack: str) -> list[AuditRecord]:
    return [r for r in records if r.arm == arm and r.attack == attack and r.source == "server"
            and r.status == "scored"]


# --------------------------------------------------------------------------- summary


def test_summary_statistics_equal_those_computed_from_the_records(run) -> None:
    run_dir, records = run
    summary = summarize(run_dir)
    assert summary["scenario"] == "audit-test" and list(summary["arms"]) == list(ARMS)
    for arm in ARMS:
        for attack in ATTACKS:
            scored = _by_hand(records, arm, attack)
            stats = summary["arms"][arm]["attacks"][attack]
            psnr = [r.metrics["psnr"] for r in scored]
            ssim = [r.metrics["ssim"] for r in scored]
            assert stats["count"] == len(scored) == len(ROUNDS) * len(CLIENTS)
            assert stats["psnr_mean"] == pytest.approx(np.mean(psnr))
            assert stats["psnr_max"] == pytest.approx(max(psnr))
            assert stats["psnr_std"] == pytest.approx(np.std(psnr))
            assert stats["ssim_mean"] == pytest.approx(np.mean(ssim))
            assert stats["ssim_max"] == pytest.approx(max(ssim))
            assert stats["patch_psnr_mean"] == pytest.approx(np.mean([r.metrics["patch_psnr"] for r in scored]))
            assert stats["label_acc_mean"] == pytest.approx(1.0)
            assert stats["fft2d_mean"] == pytest.approx(np.mean([r.metrics["fft2d"] for r in scored]))
            assert stats["leakage_mean"] == pytest.approx(
                np.mean([r.metrics["psnr"] - r.baseline["psnr"] for r in scored]))
            assert stats["seconds_mean"] == pytest.approx(np.mean([r.seconds for r in scored]))
    assert summary["arms"]["vit"]["attacks"]["april"]["psnr_mean"] > summary["arms"]["mjp"]["attacks"]["april"][
        "psnr_mean"]


def test_not_applicable_and_failed_records_are_counted_not_scored(run) -> None:
    attacks = summarize(run[0])["arms"]["vit"]["attacks"]
    assert (attacks["april"]["not_applicable"], attacks["april"]["failed"]) == (1, 0)
    assert (attacks["inverting"]["not_applicable"], attacks["inverting"]["failed"]) == (0, 1)
    assert attacks["april"]["count"] == len(ROUNDS) * len(CLIENTS)


def test_final_accuracy_is_the_last_rounds_test_top1(run) -> None:
    arms = summarize(run[0])["arms"]
    assert arms["vit"]["accuracy_final"] == ACCURACY["vit"][-1] and arms["vit"]["rounds"] == len(ROUNDS)
    assert arms["mjp"]["accuracy_final"] == ACCURACY["mjp"][-1]


def test_client_guard_records_are_summarised_apart_from_server_leakage(run) -> None:
    arms = summarize(run[0])["arms"]
    assert "guard" not in arms["vit"]
    guard = arms["mjp"]["guard"]
    assert (guard["count"], guard["withheld"], guard["noised"]) == (2, 1, 1)
    assert guard["attacks"]["april"]["psnr_mean"] == 11.0
    # The client's own measurement is not a server-side leak: it does not enter the attack statistics.
    assert arms["mjp"]["attacks"]["april"]["count"] == len(ROUNDS) * len(CLIENTS)


def test_leakage_by_round_averages_the_clients_of_each_round(run) -> None:
    run_dir, records = run
    series = leakage_by_round(AuditStore(run_dir).records(), "vit", "april")
    assert [rnd for rnd, _ in series] == list(ROUNDS)
    for rnd, value in series:
        expected = np.mean([r.metrics["psnr"] for r in _by_hand(records, "vit", "april") if r.round == rnd])
        assert value == pytest.approx(expected)


def test_non_finite_metrics_are_left_out_so_the_json_is_strict(run_copy: Path) -> None:
    AuditStore(run_copy).append(AuditRecord(arm="vit", round=3, partition_id=0, attack="dlg", status="scored",
                                            metrics={"psnr": float("nan"), "ssim": 0.25}))
    stats = summarize(run_copy)["arms"]["vit"]["attacks"]["dlg"]
    assert "psnr_mean" not in stats and "psnr_max" not in stats and stats["ssim_mean"] == 0.25
    result = runner.invoke(app, ["audit", str(run_copy), "--json"])
    assert result.exit_code == 0, result.output
    assert "NaN" not in result.stdout


def test_a_torn_last_record_is_skipped_and_everything_before_it_is_intact(run_copy: Path) -> None:
    before = summarize(run_copy)
    whole = AuditStore(run_copy).records()
    with open(run_copy / "audit" / "records.jsonl", "ab") as f:  # a crash in the middle of a write
        f.write(b'{"arm": "vit", "attack": "april", "metrics": {"psnr": 99')
    assert AuditStore(run_copy).records() == whole
    after = summarize(run_copy)
    assert after["arms"] == before["arms"]
    result = runner.invoke(app, ["audit", str(run_copy), "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["arms"] == before["arms"]


# --------------------------------------------------------------------------- the command


def test_json_prints_one_object_with_per_arm_attack_statistics(run) -> None:
    result = runner.invoke(app, ["audit", str(run[0]), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)  # the whole of stdout is one JSON object
    for arm in ARMS:
        assert summary["arms"][arm]["accuracy_final"] == ACCURACY[arm][-1]
        for attack in ATTACKS:
            stats = summary["arms"][arm]["attacks"][attack]
            assert {"psnr_mean", "psnr_max", "ssim_mean", "patch_psnr_mean", "count"} <= set(stats)
    assert summary["report"] == str(run[0] / "report.html")


def test_table_names_every_arm_and_attack_and_the_report_path(run) -> None:
    result = runner.invoke(app, ["audit", str(run[0])])
    assert result.exit_code == 0, result.output
    for word in (*ARMS, *ATTACKS, "PSNR", "0.470"):
        assert word in result.stdout
    assert result.stdout.strip().splitlines()[-1] == f"report: {run[0] / 'report.html'}"


def test_every_option_has_help_text() -> None:
    result = runner.invoke(app, ["audit", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    # RUN_DIR is described in the command's help: typer 0.20.1 under click 8.5 drops an argument's own help.
    assert "RUN_DIR (a run directory written by `fedmjp simulate`)" in text
    assert "one JSON object on stdout" in text and "Where to write the HTML report" in text


def test_not_a_run_directory_exits_2_with_one_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["audit", str(tmp_path)])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {tmp_path}: not a fedmjp run directory (no scenario.yaml)"
    assert result.stdout == "" and not (tmp_path / "report.html").exists()


def test_corrupted_metrics_file_exits_2_with_one_line(run_copy: Path) -> None:
    metrics = run_copy / "arms" / "mjp" / "metrics.jsonl"
    metrics.write_text(metrics.read_text() + '{"round": 4, "accur\n')
    result = runner.invoke(app, ["audit", str(run_copy)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "metrics.jsonl: line 4 is not valid JSON" in lines[0]
    assert "Traceback" not in result.output


# --------------------------------------------------------------------------- the report


def test_report_is_owner_only_and_fetches_nothing(report: Path) -> None:
    assert stat.S_IMODE(report.stat().st_mode) == 0o600
    page = report.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.IGNORECASE)
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", page)
    assert page.count("src='data:image/png;base64,") == page.count("<img")


def test_report_shows_plots_reconstructions_truth_and_the_scenario(report: Path, run) -> None:
    page = report.read_text()
    assert "<h1>fedmjp leakage audit: audit-test</h1>" in page
    assert page.count("<img class='plot'") == 1 + len(ARMS)  # accuracy of all arms, then one per arm
    assert page.count("alt='reconstruction'") == len(ARMS) * len(ATTACKS) * len(ROUNDS) * len(CLIENTS)
    assert page.count("alt='truth'") == page.count("alt='reconstruction'")
    assert "<details><summary>Every arm's settings" in page  # folded away
    assert page.count("<figcaption>truth</figcaption>") == page.count("alt='truth'")  # each picture labelled
    shown = re.search(r"<pre>(.*?)</pre>", page, re.DOTALL)
    assert shown and html.unescape(shown.group(1)) == (run[0] / "scenario.yaml").read_text()
    assert str(run[0].resolve()) in page


def test_the_leakage_caption_names_the_baseline_the_receipts_use(report: Path, run) -> None:
    """Leakage is PSNR over the receipts' data-free baseline, a mid-grey image (BASELINE_GREY); the caption and
    glossary say so, and the table's leakage is that difference."""
    from fedmjp.audit.receipt import BASELINE_GREY, client_receipt

    page = html.unescape(report.read_text())
    caption = re.search(r"<p class='note' id='caption'>(.*?)</p>", page, re.DOTALL).group(1)
    assert BASELINE_GREY == 0.5 and "over a mid-grey image" in caption and "starting image" not in page
    truth = _photo(0)
    black_start = torch.zeros_like(truth)  # an attack's own start is not the baseline
    [(metrics, baseline)] = client_receipt(truth, torch.tensor([0]), None, 4, [(_photo(1), black_start, None)])
    grey = leakage_metrics(torch.full_like(truth, 0.5), truth, patch=4, lpips=False)["psnr"]
    assert baseline["psnr"] == pytest.approx(grey) and abs(metrics["start_psnr"] - grey) > 1
    summary = summarize(run[0])["arms"]["vit"]["attacks"]["april"]
    assert summary["leakage_mean"] == pytest.approx(summary["psnr_mean"] - np.mean(
        [r.baseline["psnr"] for r in _by_hand(run[1], "vit", "april")]))


def test_each_row_reads_against_the_vit_by_the_results_rule(report: Path, run) -> None:
    from fedmjp.scoring.reading import judge

    page = html.unescape(report.read_text())
    stats = summarize(run[0])["arms"]
    for attack in ATTACKS:
        mjp, vit = stats["mjp"]["attacks"][attack], stats["vit"]["attacks"][attack]
        row = re.search(rf"<tr><td>mjp</td><td>{attack}</td>(.*?)</tr>", page).group(1)
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row)
        assert cells[-2] == f"{mjp['psnr_mean'] - vit['psnr_mean']:+.2f}"
        assert cells[-1] == judge(mjp, vit, False) and cells[-1] != ""
        vit_row = re.findall(r"<td[^>]*>(.*?)</td>", re.search(rf"<tr><td>vit</td><td>{attack}</td>(.*?)</tr>",
                                                                  page).group(1))
        assert vit_row[-2:] == ["–", "reference"]


def test_the_accuracy_of_a_small_run_is_flagged_and_plotted_on_the_whole_scale(run_copy: Path) -> None:
    from fedmjp.audit.report import accuracy_note

    scenario = yaml.safe_load((run_copy / "scenario.yaml").read_text())
    arms = {name: {**arm, "data": {"test_limit": 160}} for name, arm in scenario["arms"].items()}
    note = accuracy_note(arms, {"vit": [{}] * 3})
    assert "160 test images" in note and "±8 points" in note and "too small to measure accuracy" in note
    assert "too small" not in accuracy_note({n: {**a, "data": {"test_limit": 10000}} for n, a in arms.items()},
                                            {"vit": [{}] * 20})
    assert accuracy_note({n: {**a, "data": {}} for n, a in arms.items()}, {"vit": [{}] * 3}) == ""


def test_a_seed_of_a_multi_seed_run_shows_accuracy_with_a_band_over_all_seeds(run, tmp_path: Path) -> None:
    from fedmjp.audit.report import accuracy_figure, sibling_seeds
    from fedmjp.federation.rundir import atomic_json

    seeds = [Path(shutil.copytree(run[0], tmp_path / f"seed-{s}")) for s in (0, 1)]
    atomic_json(tmp_path / "seeds.json", {"seeds": [0, 1]})
    assert sibling_seeds(seeds[1]) == seeds and sibling_seeds(run[0]) is None
    result = runner.invoke(app, ["audit", str(seeds[1])])
    assert result.exit_code == 0, result.output
    page = (seeds[1] / "report.html").read_text()
    assert "Test top-1 accuracy of the global model after each round: mean and 95% band over 2 seeds." in page
    one = [{"round": 1, "accuracy": 0.2}, {"round": 2, "accuracy": 0.3}]
    other = [{"round": 1, "accuracy": 0.1}, {"round": 2, "accuracy": 0.5}]
    assert accuracy_figure({"vit": [one, other]}) != accuracy_figure({"vit": [one]})  # the band is drawn


def test_html_option_writes_the_report_there(run, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere" / "audit.html"
    result = runner.invoke(app, ["audit", str(run[0]), "--html", str(target)])
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert f"report: {target}" in result.stdout and "<img" in target.read_text()


def test_an_unwritable_report_path_exits_2_with_one_line(run, tmp_path: Path) -> None:
    result = runner.invoke(app, ["audit", str(run[0]), "--html", str(tmp_path)])  # a directory
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [f"error: {tmp_path}: cannot write the report (Is a directory)"]


def test_a_record_pointing_outside_the_image_store_is_not_embedded(run_copy: Path) -> None:
    secret = run_copy / "arms" / "vit" / "secret.png"
    shutil.copy(next((run_copy / "audit" / "images" / "vit").glob("*.png")), secret)
    AuditStore(run_copy).append(AuditRecord(arm="vit", round=9, partition_id=0, attack="dlg", status="scored",
                                            metrics={"psnr": 12.0}, image="arms/vit/secret.png"))
    assert runner.invoke(app, ["audit", str(run_copy)]).exit_code == 0
    page = (run_copy / "report.html").read_text()
    cell = page[page.index("<h3>vit / dlg</h3>"):]
    assert "reconstruction: missing or not a PNG" in cell.split("</div>")[0] and "<img" not in cell.split("</div>")[0]


def test_picture_grids_spread_over_early_and_late_rounds() -> None:
    records = [AuditRecord(arm="vit", round=r, partition_id=p, attack="april", status="scored")
               for r in range(1, 11) for p in (0, 1)]
    shown = spread(list(reversed(records)), 8)
    assert len(shown) == 8 and (shown[0].round, shown[0].partition_id) == (1, 0)
    assert (shown[-1].round, shown[-1].partition_id) == (10, 1)
    assert [r.round for r in shown] == sorted(r.round for r in shown)


def test_report_escapes_text_from_the_run(run_copy: Path) -> None:
    scenario = yaml.safe_load((run_copy / "scenario.yaml").read_text())
    scenario["name"] = "<script>alert(1)</script>"
    (run_copy / "scenario.yaml").write_text(yaml.safe_dump(scenario))
    assert runner.invoke(app, ["audit", str(run_copy)]).exit_code == 0
    page = (run_copy / "report.html").read_text()
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def _chromium() -> str:
    for candidate in ("/usr/bin/chromium", shutil.which("chromium")):
        if candidate and Path(candidate).is_file():
            return candidate
    pytest.skip("chromium not installed: `apt-get install -y chromium` (the Makefile's test set-up does)")


def _headless(report: Path, profile: Path, *args: str) -> subprocess.CompletedProcess:
    command = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={profile}", "--virtual-time-budget=5000", *args, report.resolve().as_uri()]
    return subprocess.run(command, capture_output=True, text=True, timeout=CHROMIUM_TIMEOUT, check=False)


def test_report_renders_in_a_browser_with_no_broken_images(report: Path, tmp_path: Path) -> None:
    done = _headless(report, tmp_path / "profile", "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    body = re.search(r"<body[^>]*>", done.stdout)
    assert body, done.stdout[:500]
    assert 'data-broken-images="0"' in body.group(0)
    images = re.search(r'data-images="(\d+)"', body.group(0))
    assert images and int(images.group(1)) == report.read_text().count("<img") > 0


def test_report_screenshot_is_not_blank(report: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    done = _headless(report, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,2000")
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    with Image.open(shot) as img:
        colours = img.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is None or len(colours) > 50  # None: more colours than we asked to count


def test_the_store_writes_into_a_relative_run_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `fedmjp results --out results` handed the ServerApp a relative path: the chmod walk doubled it.
    monkeypatch.chdir(tmp_path)
    store = AuditStore(Path("results/runs/privacy"))
    relative = store.save_images("vit", "r1-c0-april", torch.rand(1, 3, 8, 8))
    assert relative == "audit/images/vit/r1-c0-april.png"
    folder = tmp_path / "results/runs/privacy/audit/images/vit"
    assert (folder / "r1-c0-april.png").is_file()
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700


def test_every_arm_plots_psnr_on_one_scale_from_zero(report: Path) -> None:
    from fedmjp.audit.report import psnr_axis_top

    noise = {"vit": {"ig": [(1, 11.0), (2, 12.5)]}, "mjp": {"ig": [(1, 9.0)]}}
    assert psnr_axis_top(noise) == 40.0  # a few dB of noise do not fill the plot
    assert psnr_axis_top({**noise, "mjp": {"imprint": [(1, 100.0)]}}) == 100.0  # the exact copy sets the scale
    assert psnr_axis_top({"vit": {"ig": [(1, 41.2)]}}) == 50.0
    assert psnr_axis_top({"vit": {"ig": []}}) == 40.0
    tops = set(re.findall(r"\(left, 0 to (\d+) dB, the same scale for every arm\)", report.read_text()))
    assert len(tops) == 1 and int(tops.pop()) >= 40
