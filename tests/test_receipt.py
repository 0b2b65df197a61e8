"""Leakage receipts: what a client returns is numbers only, and the server reads back exactly what it sent."""

from __future__ import annotations

from fedmjp.audit.receipt import decode_scores, encode_scores


def test_receipt_codec_round_trips_metrics_and_baselines_per_reconstruction() -> None:
    scored = [({"psnr": 31.5, "ssim_shuffled": 0.2}, {"psnr": 11.0}), ({"psnr": 9.0}, {})]
    encoded = encode_scores(scored)
    assert all(isinstance(v, float) for v in encoded.values())
    assert decode_scores(encoded, 2) == dict(enumerate(scored))
