"""Leakage receipts: what a client returns is numbers only, and the server reads back exactly what it sent."""

from __future__ import annotations

import torch

from fedmjp.audit.receipt import BASELINE_GREY, client_receipt, score
from fedmjp.protocol import decode_scores, encode_scores


def test_receipt_codec_round_trips_metrics_and_baselines_per_reconstruction() -> None:
    scored = [({"psnr": 31.5, "ssim_shuffled": 0.2}, {"psnr": 11.0}), ({"psnr": 9.0}, {})]
    encoded = encode_scores(scored)
    assert all(isinstance(v, float) for v in encoded.values())
    assert decode_scores(encoded, 2) == dict(enumerate(scored))


def _photos() -> torch.Tensor:
    from skimage import data
    from torch.nn.functional import interpolate

    names = ("astronaut", "coffee", "chelsea")
    batch = [torch.from_numpy(getattr(data, n)()).permute(2, 0, 1).float().div(255) for n in names]
    return torch.cat([interpolate(x[None], size=(32, 32), mode="bilinear", antialias=True) for x in batch]).clamp(0, 1)


def test_a_batch_is_matched_to_its_images_before_scoring() -> None:
    truth = _photos()
    metrics = score(truth[[2, 0, 1]], truth, patch=4)
    assert metrics["psnr"] == 100.0 and metrics["ssim"] > 0.999
    assert metrics["patches_exact"] == metrics["patches_placed"] == 1.0


def test_per_sample_masks_follow_the_clients_images() -> None:
    truth = _photos()
    masks = torch.zeros(3, 64, dtype=torch.bool)
    masks[1, :16] = True  # only the second image was shuffled
    reconstruction = truth.clone()
    reconstruction[1, :, :4, :] = 0.0  # its first row of patches (positions 0..7) is wrong
    metrics = score(reconstruction[[1, 2, 0]], truth, patch=4, shuffled=masks)
    # The shuffled split averages over the one image that has shuffled patches: it sees the error.
    assert metrics["psnr_shuffled"] < 30 and metrics["psnr_unshuffled"] == 100.0


def test_every_attack_is_scored_against_the_same_grey_baseline_and_keeps_its_start() -> None:
    truth = _photos()
    noise = torch.rand(truth.shape, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2])
    sent = [(truth, noise, None), (noise, torch.full_like(truth, 0.3), None)]
    receipts = client_receipt(truth, labels, None, 4, sent)
    (first, grey_a), (second, grey_b) = receipts
    assert grey_a == grey_b
    grey = score(torch.full_like(truth, BASELINE_GREY), truth, patch=4)["psnr"]
    assert grey_a["psnr"] == grey
    assert first["start_psnr"] < grey < first["psnr"]
    assert second["start_psnr"] != first["start_psnr"]
