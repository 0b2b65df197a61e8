"""Batch leakage: reconstructions matched one-to-one to the client's images, and exact patches counted once."""

from __future__ import annotations

import pytest
import torch
from skimage import data
from torch.nn.functional import interpolate

from fedmjp.scoring.batch_metrics import align_batch, match_images, patch_recovery
from fedmjp.scoring.metrics import PSNR_CAP, pairwise_mse, pairwise_psnr, psnr
from fedmjp.models.patches import flat_tiles, from_tiles, to_tiles

PATCH = 4


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    """Four real photographs (scikit-image), 32x32: (4, 3, 32, 32)."""
    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    images = [torch.from_numpy(p).permute(2, 0, 1).float().div(255).unsqueeze(0) for p in photos]
    return torch.cat([interpolate(i, size=(32, 32), mode="area") for i in images])


def test_tiles_round_trip_in_row_major_order(batch: torch.Tensor) -> None:
    tiles = to_tiles(batch, PATCH)
    assert tiles.shape == (4, 64, 3, PATCH, PATCH)
    assert torch.equal(tiles[1, 9], batch[1, :, 4:8, 4:8])  # tile 9 = grid row 1, col 1
    assert torch.equal(from_tiles(tiles, (8, 8)), batch)
    assert torch.equal(flat_tiles(batch, PATCH)[2, 3], batch[2, :, 0:4, 12:16].flatten())


def test_shuffled_batch_is_matched_back_to_its_images(batch: torch.Tensor) -> None:
    order = torch.tensor([2, 0, 3, 1])
    noisy = (batch[order] + 0.05 * torch.randn_like(batch)).clamp(0, 1)
    assignment = match_images(noisy, batch)
    assert torch.equal(noisy[assignment], noisy[torch.argsort(order)])
    assert torch.allclose(align_batch(noisy, batch), noisy[torch.argsort(order)])


def test_matching_is_one_to_one_even_when_one_reconstruction_fits_every_image(batch: torch.Tensor) -> None:
    grey = torch.full_like(batch[:1], 0.5)
    reconstruction = torch.cat([grey, batch[1:]])
    assignment = match_images(reconstruction, batch)
    assert sorted(assignment.tolist()) == [0, 1, 2, 3]


def test_exact_images_recover_every_patch_in_place(batch: torch.Tensor) -> None:
    assert patch_recovery(batch.flip(0), None, batch, PATCH) == {"patches_exact": 1.0, "patches_placed": 1.0}


def test_duplicated_patch_counts_once(batch: torch.Tensor) -> None:
    true = flat_tiles(batch, PATCH).reshape(-1, 3 * PATCH * PATCH)
    copies = true[:1].repeat(10, 1)
    result = patch_recovery(copies, torch.zeros(10, dtype=torch.long), batch, PATCH)
    assert result["patches_exact"] == pytest.approx(1 / true.shape[0])


def test_patches_at_the_wrong_position_are_exact_but_not_placed(batch: torch.Tensor) -> None:
    true = flat_tiles(batch, PATCH)  # (4, 64, 48)
    half = true[:, :32].reshape(-1, 48)
    right = torch.arange(32).repeat(4)
    placed = patch_recovery(half, right, batch, PATCH)
    moved = patch_recovery(half, (right + 1) % 64, batch, PATCH)
    assert placed == pytest.approx({"patches_exact": 0.5, "patches_placed": 0.5})
    assert moved["patches_exact"] == pytest.approx(0.5) and moved["patches_placed"] < 0.05


def test_patch_below_the_exact_threshold_is_not_counted(batch: torch.Tensor) -> None:
    off = (batch + 0.02).clamp(0, 1)  # about 34 dB: close, not exact
    assert patch_recovery(off, None, batch, PATCH)["patches_exact"] < 0.1


def test_pairwise_psnr_is_the_psnr_of_each_pair_and_the_former_mse_formula() -> None:
    generator = torch.Generator().manual_seed(0)
    a, b = torch.rand(6, 3 * 16 * 16, generator=generator), torch.rand(5, 3 * 16 * 16, generator=generator)
    b[0], b[1] = a[2], (a[3] + 0.01).clamp(0, 1)  # an exact copy (the cap) and a near one
    value = pairwise_psnr(a, b)
    assert value.shape == (6, 5) and value[2, 0] == PSNR_CAP
    assert torch.allclose(value[:, 1].float(), psnr(a, b[1].expand_as(a)), atol=1e-5)
    # What batch matching computed before it used torchmetrics' PSNR.
    former = (-10 * torch.log10(pairwise_mse(a, b).clamp(min=10 ** (-PSNR_CAP / 10)))).clamp(max=PSNR_CAP)
    assert torch.allclose(value, former, rtol=0, atol=1e-5)


def test_patches_in_image_counts_exact_tiles_that_sit_in_their_own_image(batch: torch.Tensor) -> None:
    from fedmjp.scoring.batch_metrics import patches_in_image

    order = torch.tensor([3, 1, 0, 2])
    assert patches_in_image(batch[order], batch, PATCH) == 1.0  # the attack's order does not matter
    tiles = to_tiles(batch, PATCH).clone()
    tiles[0, :16], tiles[1, :16] = tiles[1, :16].clone(), tiles[0, :16].clone()  # a quarter of two images swapped
    assert patches_in_image(from_tiles(tiles, (8, 8)), batch, PATCH) == pytest.approx(1 - 32 / 256)
    tiles[2, :32] = 0.5  # grey gaps are not exact patches: they neither count for nor against
    assert patches_in_image(from_tiles(tiles, (8, 8)), batch, PATCH) == pytest.approx(1 - 32 / 224)
    assert patches_in_image(torch.full_like(batch, 0.5), batch, PATCH) is None
