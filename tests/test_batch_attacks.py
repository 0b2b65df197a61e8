"""Attacks on batches and on FedAvg updates as clients really train them (several steps, momentum)."""

from __future__ import annotations

import pytest
import torch
from skimage import data
from torch.nn.functional import interpolate

from fedmjp.attacks import Observation, build_attack
from fedmjp.attacks.base import rebuild_model
from fedmjp.attacks.gradient_matching import plain_forward, weights_of
from fedmjp.attacks.optimization import matched_names
from fedmjp.attacks.replay import Replay, replay_simulator
from fedmjp.audit.adversary import observation
from fedmjp.scoring.batch_metrics import align_batch, match_images
from fedmjp.scoring.metrics import psnr
from fedmjp.scenario import parse_scenario
from fedmjp.federation.train import LocalSettings, compute_gradient, local_update, seed_jigsaw
from fedmjp.federation.workload import client_round

import fedmjp.attacks.adaptive  # noqa: F401  (registers the attacks)

from .conftest import tiny

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
NAME = "vit_tiny_patch4_32"


@pytest.fixture(scope="module")
def photos() -> torch.Tensor:
    """Four real photographs, (4, 3, 32, 32) in [0, 1]."""
    batch = [torch.from_numpy(getattr(data, name)()).permute(2, 0, 1).float().div(255) for name in PHOTOS]
    return torch.cat([interpolate(x[None], size=(32, 32), mode="bilinear", antialias=True) for x in batch]).clamp(0, 1)


def _sent(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", ["ig", "dlg", "april-opt"])
def test_optimisation_attacks_return_one_image_per_example_of_a_batch(photos: torch.Tensor, name: str) -> None:
    torch.manual_seed(0)
    model = tiny(NAME, depth=1)
    result = compute_gradient(model, photos[:2], torch.tensor([4, 7]))
    obs = Observation(NAME, _sent(model), result.tensors, num_examples=2, model_kwargs={"depth": 1})
    recon = build_attack(name, steps=2, restarts=1)(obs)
    assert recon.images.shape == (2, 3, 32, 32) and sorted(recon.labels.tolist()) == [4, 7]


def test_ig_recovers_each_image_of_a_batch_of_four_real_photos(photos: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = tiny(NAME)
    result = compute_gradient(model, photos, torch.tensor([3, 1, 7, 5]))
    obs = Observation(NAME, _sent(model), result.tensors, num_examples=4, model_kwargs={"depth": 2})
    recon = build_attack("ig", steps=200, restarts=1)(obs)
    assert sorted(recon.labels.tolist()) == [1, 3, 5, 7]
    # Every image matched to exactly one reconstruction, each well above what noise scores on it.
    assert sorted(match_images(recon.images, photos).tolist()) == [0, 1, 2, 3]
    matched = align_batch(recon.images, photos)
    each = [psnr(matched[i:i + 1], photos[i:i + 1]).item() for i in range(4)]
    noise = torch.rand(photos.shape, generator=torch.Generator().manual_seed(1))
    grey = torch.full_like(photos, 0.5)
    baseline = {name: [psnr(x[i:i + 1], photos[i:i + 1]).item() for i in range(4)]
                for name, x in (("noise", noise), ("grey", grey))}
    # Measured: matched 16.4, 23.2, 28.6, 26.9 dB (mean 23.8); noise mean 8.3 dB, mid-grey mean 12.3 dB.
    assert all(got >= floor + 5.0 for got, floor in zip(each, baseline["noise"]))
    mean = sum(each) / 4
    assert mean >= sum(baseline["noise"]) / 4 + 8.0 and mean >= sum(baseline["grey"]) / 4 + 5.0


def test_adaptive_on_a_batch_matches_through_the_clients_masked_forward(photos: torch.Tensor) -> None:
    torch.manual_seed(0)
    kwargs = {"depth": 1, "mjp_ratio": 0.25}
    model = tiny("mjp_" + NAME, **kwargs)
    seed_jigsaw(model, 0)
    result = compute_gradient(model, photos[:2], torch.tensor([1, 5]))
    obs = Observation("mjp_" + NAME, _sent(model), result.tensors, num_examples=2, model_kwargs=kwargs)
    recon = build_attack("adaptive", steps=3, restarts=1)(obs)
    mask = result.jigsaws[0].mask[0]
    assert torch.equal(recon.shuffled, mask) and recon.images.shape == (2, 3, 32, 32)
    # The DAL term of the shared mask is removed exactly; each image's masked tiles placed on their own.
    assert recon.info["dal_applied"] and recon.info["dal_head_residual"] < 1e-6
    assert recon.positions.shape == (2, 64)
    assert all(torch.equal(p.sort().values, torch.arange(64)) for p in recon.positions)


def test_replay_with_momentum_reproduces_the_clients_update_exactly(photos: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = tiny(NAME, depth=1)
    sent = _sent(model)
    labels = torch.tensor([0, 1, 2, 3])
    result = local_update(model, [(photos[:2], labels[:2]), (photos[2:], labels[2:])], lr=0.05, momentum=0.9)
    assert result.settings == LocalSettings(2, 2, 1, "sgd", 0.05, 0.9)
    obs = Observation(NAME, sent, result.tensors, kind="update", num_examples=4, model_kwargs={"depth": 1},
                      local_lr=0.05, local_steps=2, local_batch_size=2, local_optimizer="sgd", local_momentum=0.9)
    attacker = rebuild_model(obs)
    names = matched_names(attacker, obs)
    replay = Replay.from_observation(obs)
    assert replay.momentum == 0.9
    simulated = replay_simulator(plain_forward(attacker), weights_of(attacker, names), labels, replay)(photos)
    for name in names:
        torch.testing.assert_close(simulated[name], result.tensors[name], rtol=1e-3, atol=1e-6)
    # Without the momentum the replay is wrong by far more than float error.
    plain = replay_simulator(plain_forward(attacker), weights_of(attacker, names), labels,
                             Replay(0.05, 2, 2))(photos)
    assert (plain["head.bias"] - result.tensors["head.bias"]).abs().max() > 1e-3


def test_settings_travel_in_reply_metrics_and_reach_the_attacker() -> None:
    settings = LocalSettings(batch_size=3, steps=4, epochs=2, optimizer="sgd", lr=0.02, momentum=0.9)
    assert LocalSettings.from_metrics(settings.to_metrics()) == settings
    assert LocalSettings.from_metrics({"num-examples": 3.0}) is None
    arm = parse_scenario({"data": {"source": "photos"}, "training": {"mode": "fedavg", "batch_size": 8}}).arms["run"]
    reported = observation(arm, {}, {}, 12, 1, settings)
    assert (reported.local_batch_size, reported.local_steps, reported.local_momentum) == (3, 4, 0.9)
    assert reported.local_reported
    configured = observation(arm, {}, {}, 12, 1)
    assert configured.local_batch_size == 8 and not configured.local_reported


def test_without_reported_settings_the_server_assumes_the_lr_it_scheduled_for_the_round() -> None:
    arm = parse_scenario({"data": {"source": "photos"}, "training": {
        "mode": "fedavg", "rounds": 4, "lr": 0.1, "lr_schedule": "cosine"}}).arms["run"]
    assert [observation(arm, {}, {}, 12, r).local_lr for r in (1, 3)] == [0.1, pytest.approx(0.05)]


def test_a_client_with_fewer_examples_than_the_batch_size_reports_the_batch_it_used() -> None:
    arm = parse_scenario({"data": {"source": "photos"}, "model": {"name": NAME, "kwargs": {"depth": 1}},
                          "clients": {"num_clients": 8},
                          "training": {"mode": "fedavg", "batch_size": 512, "momentum": 0.9}}).arms["run"]
    from fedmjp.federation.workload import build_model, partition_indices

    weights = build_model(arm).state_dict()
    work = client_round(arm, weights, 0, 1)
    own = len(partition_indices(arm, 0))
    assert own < 512
    assert work.result.settings == LocalSettings(own, 1, 1, "sgd", arm.training.lr, 0.9)
