"""Optimisation attacks (ig, dlg, april-opt) and FedAvg replay, on real 2-block ViTs."""

from __future__ import annotations

import pytest
import torch

from fedmjp.attacks import Observation, build_attack
from fedmjp.attacks.base import rebuild_model
from fedmjp.attacks.gradient_matching import CosineTerm, MatchingProblem, gradient_simulator, plain_forward
from fedmjp.attacks.gradient_matching import weights_of
from fedmjp.attacks.optimization import matched_names
from fedmjp.attacks.replay import Replay, replay_simulator
from fedmjp.scoring.metrics import psnr
from fedmjp.federation.train import compute_gradient, local_update

import fedmjp.attacks.optimization  # noqa: F401  (registers ig, dlg, april-opt)

from .conftest import tiny

NAME = "vit_tiny_patch4_32"


def _observe(model: torch.nn.Module, result, **extra) -> Observation:
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return Observation(NAME, weights, result.tensors, kind=result.kind, num_examples=result.num_examples,
                       model_kwargs={"depth": 2}, **extra)


def _gradient_obs(photo: torch.Tensor) -> Observation:
    torch.manual_seed(0)
    model = tiny(NAME)
    return _observe(model, compute_gradient(model, photo, torch.tensor([3])))


def test_ig_recovers_a_recognisable_photo_and_the_centred_term_is_what_makes_it(photo32: torch.Tensor) -> None:
    obs = _gradient_obs(photo32)
    recon = build_attack("ig", steps=200, restarts=1)(obs)
    published = build_attack("ig", steps=200, restarts=1, centred_pos=0.0)(obs)
    noise = torch.rand(photo32.shape, generator=torch.Generator().manual_seed(1))
    grey = torch.full_like(photo32, 0.5)
    # Measured: ig 21.0 dB, IG's published distance alone 10.0 dB, uniform noise 7.9 dB, mid-grey 11.0 dB.
    got = psnr(recon.images, photo32).item()
    assert got >= psnr(noise, photo32).item() + 8.0 and got >= psnr(grey, photo32).item() + 5.0
    assert got >= psnr(published.images, photo32).item() + 5.0
    assert [t["centred"] for t in recon.info["terms"]] == [True] and published.info["terms"] == []
    assert recon.labels.tolist() == [3] and recon.threat_model.labels == "recovered"


def test_plain_and_vectorised_restarts_give_the_same_distances(photo32: torch.Tensor) -> None:
    obs = _gradient_obs(photo32)
    model = rebuild_model(obs)
    names = matched_names(model, obs)
    problem = MatchingProblem(
        gradient_simulator(plain_forward(model), weights_of(model, names), torch.tensor([3])),
        {n: obs.tensors[n] for n in names}, terms=[CosineTerm("pos_embed", 1.0, rows_from=1, centred=True)],
    )
    candidates = torch.stack([photo32, photo32.flip(-1), torch.full_like(photo32, 0.5)])
    vectorised = problem.per_restart(candidates)
    problem.batching = "loop"
    looped = problem.per_restart(candidates)
    one = torch.cat([problem.per_restart(c[None]) for c in candidates])
    torch.testing.assert_close(looped, vectorised, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(one, vectorised, rtol=1e-4, atol=1e-6)
    assert problem.per_restart(photo32[None]).abs().item() < 1e-5  # the truth matches exactly


@pytest.mark.parametrize("name", ["dlg", "april-opt"])
def test_attack_returns_finite_images_in_the_unit_box(photo32: torch.Tensor, name: str) -> None:
    recon = build_attack(name, steps=5, restarts=2)(_gradient_obs(photo32))
    assert recon.images.shape == photo32.shape and recon.start.shape == photo32.shape
    assert torch.isfinite(recon.images).all()
    assert recon.images.min() >= 0 and recon.images.max() <= 1


@pytest.mark.parametrize("name", ["ig", "dlg"])  # Adam and L-BFGS
def test_a_front_end_is_told_the_optimisations_progress(photo32: torch.Tensor, name: str) -> None:
    from fedmjp.attacks.gradient_matching import ON_PROGRESS

    reports: list[tuple[int, int]] = []
    token = ON_PROGRESS.set(lambda done, steps, best: reports.append((done, steps)))
    try:
        build_attack(name, steps=5, restarts=1, log_every=2)(_gradient_obs(photo32))
    finally:
        ON_PROGRESS.reset(token)
    assert reports == [(1, 5), (3, 5), (5, 5)]
    build_attack(name, steps=2, restarts=1)(_gradient_obs(photo32))
    assert len(reports) == 3  # nobody listening: nothing reported


def test_given_labels_are_used_and_recorded(photo32: torch.Tensor) -> None:
    obs = _gradient_obs(photo32)
    obs.labels = torch.tensor([7])
    recon = build_attack("ig", steps=2, restarts=1)(obs)
    assert recon.labels.tolist() == [7] and recon.threat_model.labels == "given"


def _update_obs(photo: torch.Tensor, known: bool) -> Observation:
    torch.manual_seed(0)
    model = tiny(NAME)
    sent = {k: v.detach().clone() for k, v in model.state_dict().items()}  # what the server sent
    images, labels = torch.cat([photo, photo.flip(-1)]), torch.tensor([3, 5])
    result = local_update(model, [(images[:1], labels[:1]), (images[1:], labels[1:])], lr=0.1)
    hyper = dict(local_lr=0.1, local_steps=2, local_batch_size=1, local_optimizer="sgd") if known else {}
    return Observation(NAME, sent, result.tensors, kind="update", num_examples=2, model_kwargs={"depth": 2}, **hyper)


def test_fedavg_replay_matches_the_update_better_than_one_gradient(photo32: torch.Tensor) -> None:
    budget = dict(steps=25, restarts=1, tv=0.05, centred_pos=0.0)  # the replay alone, not the extra term
    replayed = build_attack("ig", **budget)(_update_obs(photo32, known=True))
    single = build_attack("ig", **budget)(_update_obs(photo32, known=False))
    assert replayed.threat_model.local_hyperparameters and replayed.info["update_treatment"] == "replay"
    assert not single.threat_model.local_hyperparameters and single.info["update_treatment"] == "one-gradient"
    # Score both reconstructions by the same yardstick: the replayed update against the observed one.
    obs = _update_obs(photo32, known=True)
    model = rebuild_model(obs)
    names = matched_names(model, obs)
    replay = Replay.from_observation(obs)
    problem = MatchingProblem(
        replay_simulator(plain_forward(model), weights_of(model, names), replayed.labels, replay),
        {n: obs.tensors[n] for n in names},
    )
    assert problem.per_restart(replayed.images[None]) < problem.per_restart(single.images[None])


def test_one_restart_runs_on_an_mjp_model_whose_dal_head_is_unused_in_eval(photo32: torch.Tensor) -> None:
    torch.manual_seed(0)
    kwargs = {"depth": 2, "mjp_ratio": 0.25}
    model = tiny("mjp_" + NAME, **kwargs)
    result = compute_gradient(model, photo32, torch.tensor([3]))
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    obs = Observation("mjp_" + NAME, weights, result.tensors, model_kwargs=kwargs)
    recon = build_attack("ig", steps=3, restarts=1)(obs)
    assert torch.isfinite(recon.images).all() and recon.images.shape == photo32.shape


def test_the_patch_prior_costs_only_what_faces_across_patch_borders(photo32: torch.Tensor) -> None:
    from fedmjp.attacks.gradient_matching import patch_borders

    flat_patches = torch.rand(1, 1, 3, 8, 8).repeat_interleave(4, -1).repeat_interleave(4, -2)  # 4-px tiles
    assert float(patch_borders(flat_patches, 4)) > 0  # neighbouring tiles differ only at their borders
    tiles = flat_patches[..., ::4, ::4]  # (1, 1, 3, 8, 8): one value per tile
    expected = (tiles[..., :, 1:] - tiles[..., :, :-1]).pow(2).mean() + (tiles[..., 1:, :] - tiles[..., :-1, :]).pow(2).mean()
    assert float(patch_borders(flat_patches, 4)) == pytest.approx(float(expected), rel=1e-5)
    inside = torch.zeros(1, 1, 3, 8, 8)
    inside[..., 1, 1] = 1.0  # a pixel inside a 4-px tile, away from every border
    assert float(patch_borders(inside, 4)) == 0
    # An option like any budget's, on the ig the audit runs: the prior changes the reconstruction.
    obs = _gradient_obs(photo32)
    plain = build_attack("ig", steps=20, restarts=1)(obs)
    prior = build_attack("ig", steps=20, restarts=1, patch_prior=10.0)(obs)
    assert prior.info["budget"]["patch_prior"] == 10.0 and not torch.equal(prior.images, plain.images)
    assert float(patch_borders(prior.images[None], 4)) < float(patch_borders(plain.images[None], 4))
