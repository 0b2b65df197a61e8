"""Leakage metrics: each test states one behaviour the audit relies on."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision
from skimage import data
from torchvision.models import AlexNet_Weights

from fedmjp.scoring.metrics import PSNR_CAP, fft2d_distance, leakage_metrics, lpips_available, lpips_status, match_patches, patch_matched_psnr, per_image_metrics, psnr

PATCH = 8
SPLIT_KEYS = ("mse", "psnr", "ssim", "patch_psnr")
ALEXNET_FILE = Path(AlexNet_Weights.DEFAULT.url).name  # the name torch hub caches the LPIPS backbone under


@pytest.fixture(scope="module")
def photo() -> torch.Tensor:
    """A real photograph (scikit-image's astronaut, shipped in its wheel), 64x64, shape (1, 3, 64, 64)."""
    image = torch.from_numpy(data.astronaut()).permute(2, 0, 1).float().div(255).unsqueeze(0)
    return F.interpolate(image, size=(64, 64), mode="area")


def tiles_permuted(image: torch.Tensor, perm: torch.Tensor, patch: int = PATCH) -> torch.Tensor:
    """The image with tile i (row-major) replaced by tile perm[i]."""
    b, c, h, w = image.shape
    rows, cols = h // patch, w // patch
    tiles = image.reshape(b, c, rows, patch, cols, patch).permute(0, 2, 4, 1, 3, 5)
    tiles = tiles.reshape(b, rows * cols, c, patch, patch)[:, perm]
    return tiles.reshape(b, rows, cols, c, patch, patch).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)


def pixel_mask(tile_mask: torch.Tensor, size: int, patch: int = PATCH) -> torch.Tensor:
    """(N,) tile mask -> (1, 1, size, size) pixel mask."""
    grid = tile_mask.reshape(size // patch, size // patch)
    return grid.repeat_interleave(patch, 0).repeat_interleave(patch, 1)[None, None]


def test_identical_images_score_the_psnr_cap_and_ssim_one(photo: torch.Tensor) -> None:
    metrics = leakage_metrics(photo, photo.clone(), patch=PATCH)
    assert metrics["psnr"] == PSNR_CAP
    assert metrics["patch_psnr"] == PSNR_CAP
    assert metrics["mse"] == 0.0
    assert metrics["ssim"] == pytest.approx(1.0, abs=1e-6)


def test_gaussian_noise_gives_the_analytic_psnr() -> None:
    sigma = 0.05
    gray = torch.full((2, 3, 64, 64), 0.5)
    noisy = gray + sigma * torch.randn(gray.shape, generator=torch.Generator().manual_seed(0))
    expected = 10 * math.log10(1 / sigma**2)  # 26.02 dB; clipping is 10 sigma away
    assert leakage_metrics(noisy, gray)["psnr"] == pytest.approx(expected, abs=0.2)


def test_permuted_patches_keep_patch_matched_psnr_at_the_cap_while_plain_psnr_drops(photo: torch.Tensor) -> None:
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(1))
    scrambled = tiles_permuted(photo, perm)
    assert patch_matched_psnr(scrambled, photo, PATCH).item() == PSNR_CAP
    assert psnr(scrambled, photo).item() < 20


def test_assignment_maps_each_true_tile_to_the_reconstructed_tile_holding_it(photo: torch.Tensor) -> None:
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(2))
    scrambled = tiles_permuted(photo, perm)  # reconstructed tile i holds true tile perm[i]
    _, assignment = patch_matched_psnr(scrambled, photo, PATCH, return_assignment=True)
    assert torch.equal(assignment[0], torch.argsort(perm))
    assert torch.equal(match_patches(scrambled, photo, PATCH), assignment)


def test_split_isolates_damage_to_shuffled_patches(photo: torch.Tensor) -> None:
    shuffled = torch.zeros(64, dtype=torch.bool)
    shuffled[::3] = True
    noise = 0.1 * torch.randn(photo.shape, generator=torch.Generator().manual_seed(3))
    damaged = (photo + noise * pixel_mask(shuffled, 64)).clamp(0, 1)
    metrics = leakage_metrics(damaged, photo, patch=PATCH, shuffled=shuffled)
    assert metrics["psnr_unshuffled"] == PSNR_CAP
    assert metrics["patch_psnr_unshuffled"] == PSNR_CAP
    assert metrics["mse_unshuffled"] == 0.0
    assert metrics["psnr_shuffled"] < 30
    assert metrics["patch_psnr_shuffled"] < 30
    assert metrics["ssim_shuffled"] < metrics["ssim_unshuffled"]


def test_an_empty_split_set_omits_its_keys_instead_of_nan(photo: torch.Tensor) -> None:
    metrics = leakage_metrics(photo * 0.9, photo, patch=PATCH, shuffled=torch.zeros(64, dtype=torch.bool))
    assert all(f"{key}_unshuffled" in metrics for key in SPLIT_KEYS)
    assert not any(key.endswith("_shuffled") and not key.endswith("_unshuffled") for key in metrics)
    assert not any(math.isnan(value) for value in metrics.values())


def test_batch_metrics_are_the_means_of_per_image_metrics(photo: torch.Tensor) -> None:
    truth = torch.cat([photo, photo.flip(-1)])
    reconstruction = (truth + 0.05 * torch.randn(truth.shape, generator=torch.Generator().manual_seed(4))).clamp(0, 1)
    shuffled = torch.zeros(2, 64, dtype=torch.bool)
    shuffled[0, :10] = True  # only the first image has shuffled patches
    kwargs = dict(patch=PATCH, shuffled=shuffled, labels_true=[1, 2], labels_pred=[2, 7])
    rows = per_image_metrics(reconstruction, truth, **kwargs)
    batch = leakage_metrics(reconstruction, truth, **kwargs)
    assert "psnr_shuffled" in rows[0] and "psnr_shuffled" not in rows[1]
    assert batch["psnr"] == pytest.approx((rows[0]["psnr"] + rows[1]["psnr"]) / 2)
    assert batch["psnr_shuffled"] == pytest.approx(rows[0]["psnr_shuffled"])
    assert [row["label_acc"] for row in rows] == [0.0, 1.0]


def test_fft2d_is_zero_for_identical_images_and_grows_with_noise(photo: torch.Tensor) -> None:
    generator = torch.Generator().manual_seed(5)
    slightly = (photo + 0.02 * torch.randn(photo.shape, generator=generator)).clamp(0, 1)
    heavily = (photo + 0.2 * torch.randn(photo.shape, generator=generator)).clamp(0, 1)
    assert fft2d_distance(photo, photo).item() == pytest.approx(0.0, abs=1e-6)
    assert 0 < fft2d_distance(slightly, photo).item() < fft2d_distance(heavily, photo).item()


def test_label_accuracy_is_order_free_and_counts_duplicates(photo: torch.Tensor) -> None:
    batch = photo.expand(4, -1, -1, -1)
    reordered = leakage_metrics(batch, batch, labels_true=torch.tensor([3, 1, 4, 1]), labels_pred=[1, 4, 1, 3])
    repeated = leakage_metrics(batch, batch, labels_true=[3, 1, 4, 1], labels_pred=[1, 1, 1, 1])
    assert reordered["label_acc"] == 1.0
    assert repeated["label_acc"] == 0.5  # only the two true 1s are recovered


def test_lpips_key_is_present_exactly_when_the_status_says_ready(photo: torch.Tensor) -> None:
    status = lpips_status()
    assert status.startswith("lpips ready" if lpips_available() else "lpips skipped")
    assert "\n" not in status
    assert ("lpips" in leakage_metrics(photo, photo)) == lpips_available()
    assert "lpips" not in leakage_metrics(photo, photo, lpips=False)


def test_missing_lpips_weights_are_reported_with_the_cache_folder(
    photo: torch.Tensor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert lpips_status().startswith("lpips skipped: AlexNet weights not found in")
    assert str(tmp_path / "hub" / "checkpoints") in lpips_status()
    assert "lpips" not in leakage_metrics(photo, photo)
    assert not any((tmp_path / "hub" / "checkpoints").glob("*"))  # nothing was fetched


def test_lpips_runs_when_backbone_weights_are_on_disk(
    photo: torch.Tensor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Randomly initialised AlexNet weights in the hub cache: the ready path, without any download.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.manual_seed(6)
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), checkpoints / ALEXNET_FILE)
    assert lpips_status().startswith("lpips ready")
    assert leakage_metrics(photo, photo)["lpips"] == pytest.approx(0.0, abs=1e-6)
    assert leakage_metrics(photo.flip(-1), photo)["lpips"] > 0


def test_unloadable_lpips_weights_are_reported_not_raised(
    photo: torch.Tensor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / ALEXNET_FILE).write_bytes(b"not a checkpoint")
    assert lpips_status().startswith("lpips skipped: AlexNet weights at")
    assert "failed to load" in lpips_status()
    assert "\n" not in lpips_status()
    assert "lpips" not in leakage_metrics(photo, photo)


def test_a_patch_size_that_does_not_divide_the_image_is_rejected(photo: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="must divide"):
        leakage_metrics(photo, photo, patch=7)


def test_a_shuffled_mask_of_the_wrong_length_is_rejected(photo: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="shuffled must have shape"):
        leakage_metrics(photo, photo, patch=PATCH, shuffled=torch.zeros(16, dtype=torch.bool))
