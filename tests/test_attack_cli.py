"""``fedmjp attack``: the real command on a real photograph."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data
from typer.testing import CliRunner

import fedmjp.commands.attack  # noqa: F401  (registers the command)
from fedmjp.attacks import attack_names
from fedmjp.cli import app

runner = CliRunner()


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "coffee.jpg"
    Image.fromarray(data.coffee()).save(path, quality=95)
    return path


def _attack(*args: str):
    return runner.invoke(app, ["attack", *args])


def test_april_on_a_vit_leaks_the_photo_and_reports_json(photo: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = _attack("--model", "vit_tiny_patch4_32", "--image", str(photo), "--out", str(out), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["model"] == "vit_tiny_patch4_32" and summary["attack"] == "april"
    assert summary["metrics"]["psnr"] >= 60 and summary["metrics"]["ssim"] > 0.99
    assert summary["baseline"]["kind"] == "mid-grey" and summary["metrics"]["psnr"] > summary["baseline"]["psnr"] + 40
    assert summary["leakage_db"] == pytest.approx(summary["metrics"]["psnr"] - summary["baseline"]["psnr"])
    assert summary["labels_recovered"] == [0] and summary["seconds"] > 0
    assert summary["threat_model"]["assumes_mjp"] is False


def test_the_picture_is_private_and_written_whole(photo: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = _attack("--model", "vit_tiny_patch4_32", "--image", str(photo), "--out", str(out), "--json")
    png = Path(json.loads(result.stdout)["image"])
    assert png.parent == out and png.is_file()
    assert stat.S_IMODE(png.stat().st_mode) == 0o600 and stat.S_IMODE(out.stat().st_mode) == 0o700
    assert [p.name for p in out.iterdir()] == [png.name]  # no temp file left behind
    with Image.open(png) as img:
        pixels = np.asarray(img.convert("L"))
    strip, pictures = pixels[:16], pixels[16:]
    assert pictures.shape[1] > 2 * pictures.shape[0]  # truth | reconstruction side by side
    half = strip.shape[1] // 2
    assert strip[:, :half].min() < 100 and strip[:, half:].min() < 100  # each column named in dark text


def test_mjp_model_cuts_the_leak_and_reports_the_split(photo: Path, tmp_path: Path) -> None:
    result = _attack("--model", "mjp_vit_tiny_patch4_32", "--mjp-ratio", "0.25", "--image", str(photo),
                     "--out", str(tmp_path / "out"), "--json")
    summary = json.loads(result.stdout)
    assert summary["mjp_ratio"] == 0.25 and summary["shuffled_patches"] == 16
    assert summary["metrics"]["psnr"] < 30
    assert {"psnr_shuffled", "psnr_unshuffled", "patch_psnr_shuffled"} <= summary["metrics"].keys()


def test_table_output_names_the_metrics(photo: Path, tmp_path: Path) -> None:
    result = _attack("--model", "vit_tiny_patch4_32", "--image", str(photo), "--out", str(tmp_path / "out"))
    assert result.exit_code == 0
    assert result.stdout.count("PSNR dB") >= 2 and "leakage dB" in result.stdout and "attack seconds" in result.stdout
    assert "meaning" in result.stdout and "metrics with --json" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "no_such_model"], "unknown model"),
        (["--image", "missing.png"], "no such file"),
        (["--attack", "no_such_attack"], "unknown attack"),
        (["--mjp-ratio", "1.5", "--model", "mjp_vit_tiny_patch4_32"], "must be in [0, 1]"),
        (["--mjp-ratio", "0.25"], "has no jigsaw"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(photo: Path, tmp_path: Path, args: list[str],
                                                         message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    options = {"--model": "vit_tiny_patch4_32", "--image": photo.name, **dict(zip(args[::2], args[1::2]))}
    result = _attack(*[item for pair in options.items() for item in pair], "--out", "out")
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr
    assert not (tmp_path / "out").exists()


def test_an_error_naming_a_long_path_stays_on_one_line(tmp_path: Path) -> None:
    missing = tmp_path / ("deep-" * 12) / "missing.png"
    result = _attack("--model", "vit_tiny_patch4_32", "--image", str(missing), "--out", str(tmp_path / "out"))
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1


def test_a_file_that_is_not_an_image_is_an_input_error(tmp_path: Path) -> None:
    text = tmp_path / "notes.png"
    text.write_text("not pixels")
    result = _attack("--model", "vit_tiny_patch4_32", "--image", str(text), "--out", str(tmp_path / "out"))
    assert result.exit_code == 2 and "not a readable image" in result.stderr
    assert not (tmp_path / "out").exists()


def test_help_explains_every_option() -> None:
    result = runner.invoke(app, ["attack", "--help"], terminal_width=200)
    assert result.exit_code == 0
    for option in ("--model", "--image", "--attack", "--mjp-ratio", "--seed", "--steps", "--out", "--json"):
        assert option in result.stdout


@pytest.mark.skipif("ig" not in attack_names(), reason="the optimisation attacks are not in this build")
def test_ig_runs_with_a_tiny_budget(photo: Path, tmp_path: Path) -> None:
    result = _attack("--model", "vit_tiny_patch4_32", "--image", str(photo), "--attack", "ig", "--steps", "2",
                     "--out", str(tmp_path / "out"), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["attack"] == "ig"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """An ImageFolder-style tree of real photos: two classes, two photos each."""
    root = tmp_path / "images"
    for cls, names in (("a", ("coffee", "chelsea")), ("b", ("astronaut", "rocket"))):
        (root / cls).mkdir(parents=True)
        for name in names:
            Image.fromarray(getattr(data, name)()).save(root / cls / f"{name}.png")
    return root


def test_a_seeded_batch_from_a_folder_is_attacked_and_scored_matched(folder: Path, tmp_path: Path) -> None:
    args = ("--model", "vit_tiny_patch4_32", "--images", str(folder), "--batch-size", "3", "--attack", "ig",
            "--steps", "2", "--out", str(tmp_path / "out"), "--json")
    result = _attack(*args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["batch_size"] == 3 and len(set(summary["images"])) == 3
    assert all(Path(p).parent.name == "ab"[label] for p, label in zip(summary["images"], summary["labels"]))
    assert "patches_exact" in summary["metrics"]
    assert summary["leakage_db"] == pytest.approx(summary["metrics"]["psnr"] - summary["baseline"]["psnr"])
    assert json.loads(_attack(*args).stdout)["images"] == summary["images"]  # seeded


def test_april_on_a_batch_says_not_applicable(folder: Path, tmp_path: Path) -> None:
    result = _attack("--model", "vit_tiny_patch4_32", "--images", str(folder), "--batch-size", "2",
                     "--out", str(tmp_path / "out"))
    assert result.exit_code == 2 and "batch size 1" in result.stderr


def test_weights_from_a_run_are_attacked(photo: Path, tmp_path: Path) -> None:
    import timm
    import torch

    torch.manual_seed(7)
    weights = tmp_path / "final_weights.pt"
    torch.save(timm.create_model("vit_tiny_patch4_32").state_dict(), weights)
    result = _attack("--model", "vit_tiny_patch4_32", "--image", str(photo), "--weights", str(weights),
                     "--out", str(tmp_path / "out"), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["weights"] == str(weights) and summary["metrics"]["psnr"] >= 60
    wrong = _attack("--model", "vit_tiny_patch16_224", "--image", str(photo), "--weights", str(weights),
                    "--out", str(tmp_path / "out2"))
    assert wrong.exit_code == 2 and "weights:" in wrong.stderr and len(wrong.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out2").exists()


@pytest.mark.parametrize("model", ["vit_tiny_patch4_32", "mjp_vit_tiny_patch4_32"])
def test_imprint_plants_the_model_and_reads_a_batch_exactly(folder: Path, tmp_path: Path, model: str) -> None:
    """The dishonest server's attack from the command line: it plants the weights (thresholds from the built-in
    public photos, not the batch), the client computes its gradient on them, and every patch comes back, MJP
    or not."""
    result = _attack("--model", model, "--images", str(folder), "--batch-size", "4", "--attack", "imprint",
                     "--out", str(tmp_path / "out"), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["threat_model"]["server"] == "malicious" and summary["batch_size"] == 4
    assert summary["metrics"]["patches_exact"] >= 0.9
    assert summary["info"]["patches_recovered"] > 0
    if model.startswith("mjp_"):  # masked positions carry no code: those patches come back unplaced
        assert summary["shuffled_patches"] > 0
        assert summary["metrics"]["patches_placed"] < summary["metrics"]["patches_exact"]
    else:
        assert summary["metrics"]["patches_placed"] >= 0.9 and summary["metrics"]["psnr"] >= 40


def test_imprint_with_a_missing_server_folder_is_an_input_error(folder: Path, tmp_path: Path) -> None:
    result = _attack("--model", "vit_tiny_patch4_32", "--images", str(folder), "--batch-size", "2", "--attack",
                     "imprint", "--server-images", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out"))
    assert result.exit_code == 2 and result.stderr.startswith("error: --server-images:")
    assert not (tmp_path / "out").exists()


def test_the_cli_leaves_the_clients_fused_attention_alone() -> None:
    """Importing the commands once set TIMM_FUSED_ATTN=0 for the whole process, so every run started by the
    CLI (its SuperLink, Ray's clients, the in-process grid inherit the environment) trained unfused: slower,
    and not the arithmetic of a run started from Python. Only the attacker's copy turns it off."""
    import os
    import subprocess
    import sys

    probe = ("import os, timm, fedmjp.commands, fedmjp.models; "
             "m = timm.create_model('vit_tiny_patch4_32', depth=1); "
             "print(os.environ.get('TIMM_FUSED_ATTN'), all(b.attn.fused_attn for b in m.blocks))")
    env = {k: v for k, v in os.environ.items() if k != "TIMM_FUSED_ATTN"}
    shown = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert shown.stdout.split() == ["None", "True"]
