"""APRIL closed form: exact on standard ViTs, beaten by MJP's masked position embeddings."""

from __future__ import annotations

import pytest
import torch
from skimage import data
from torch.nn.functional import interpolate

from fedmjp.attacks import NotApplicable, Observation, build_attack
from fedmjp.scoring.metrics import leakage_metrics
from fedmjp.models import draw_jigsaw
from fedmjp.federation.train import compute_gradient, local_update

from .conftest import tiny

LABEL = torch.tensor([3])
EXACT_DB = 60.0


def _observe(model: torch.nn.Module, name: str, images: torch.Tensor, **kwargs) -> Observation:
    result = compute_gradient(model, images, torch.zeros(len(images), dtype=torch.long) + LABEL[0])
    return Observation(name, model.state_dict(), result.tensors, num_examples=len(images), model_kwargs=kwargs)


def _mjp_observation(photo: torch.Tensor, mode: str, ratio: float) -> tuple[Observation, torch.Tensor]:
    kwargs = dict(depth=2, mjp_mode=mode, mjp_ratio=ratio)
    torch.manual_seed(0)
    model = tiny("mjp_vit_tiny_patch4_32", **kwargs)
    jigsaw = draw_jigsaw((8, 8), 1, ratio, generator=torch.Generator().manual_seed(0))
    with model.fixed_jigsaw(jigsaw):
        obs = _observe(model, "mjp_vit_tiny_patch4_32", photo, **kwargs)
    return obs, jigsaw.mask


def _psnr(images: torch.Tensor, truth: torch.Tensor, **kwargs) -> dict[str, float]:
    return leakage_metrics(images, truth, lpips=False, **kwargs)


def test_recovers_the_photo_from_a_random_init_vit_gradient(photo32: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = tiny(depth=2)
    rec = build_attack("april")(_observe(model, "vit_tiny_patch4_32", photo32, depth=2))
    assert rec.images.shape == photo32.shape
    assert _psnr(rec.images, photo32)["psnr"] >= EXACT_DB
    # The data-free baseline is far from the photo: the leak is the gradient's, not the prior's.
    assert _psnr(rec.start, photo32)["psnr"] < 20


def test_recovers_the_photo_after_a_few_training_steps(photo32: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = tiny(depth=2)
    batch = (torch.rand(8, 3, 32, 32), torch.arange(8))
    for _ in range(5):
        local_update(model, [batch], lr=1e-3, optimizer="adam")
    rec = build_attack("april")(_observe(model, "vit_tiny_patch4_32", photo32, depth=2))
    assert _psnr(rec.images, photo32)["psnr"] >= EXACT_DB


def test_recovers_a_224px_photo_from_a_one_block_vit_small() -> None:
    photo = torch.from_numpy(data.chelsea()).permute(2, 0, 1).float().div(255).unsqueeze(0)
    photo = interpolate(photo, size=(224, 224), mode="bilinear", antialias=True).clamp(0, 1)
    torch.manual_seed(0)
    model = tiny("vit_small_patch16_224", depth=1)
    rec = build_attack("april")(_observe(model, "vit_small_patch16_224", photo, depth=1))
    assert rec.info["positions"] == 196 and rec.info["rank"] == 196
    assert _psnr(rec.images, photo)["psnr"] >= EXACT_DB


def test_recovers_the_photo_from_a_one_step_sgd_update(photo32: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = tiny(depth=2)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    result = local_update(model, [(photo32, LABEL)], lr=0.05)
    obs = Observation("vit_tiny_patch4_32", weights, result.tensors, kind="update", model_kwargs={"depth": 2},
                      local_lr=0.05, local_steps=1, local_optimizer="sgd")
    rec = build_attack("april")(obs)
    assert _psnr(rec.images, photo32)["psnr"] >= EXACT_DB
    assert rec.labels.tolist() == LABEL.tolist()


def test_naive_shuffle_leaks_the_shuffled_image_exactly(photo32: torch.Tensor) -> None:
    obs, mask = _mjp_observation(photo32, "naive", 0.25)
    rec = build_attack("april")(obs)
    scores = _psnr(rec.images, photo32, patch=4, shuffled=mask)
    # Every patch is recovered, only the shuffled ones sit where the jigsaw put them.
    assert scores["patch_psnr"] >= EXACT_DB
    assert scores["psnr_unshuffled"] >= EXACT_DB
    assert scores["psnr"] < 30 and scores["psnr_shuffled"] < 20


@pytest.mark.parametrize("ratio", [0.1, 0.25, 0.5])
def test_mjp_masked_embeddings_defeat_the_closed_form(photo32: torch.Tensor, ratio: float) -> None:
    obs, mask = _mjp_observation(photo32, "mjp", ratio)
    rec = build_attack("april")(obs)
    scores = _psnr(rec.images, photo32, patch=4, shuffled=mask)
    assert rec.info["rank"] == 64 - int(mask.sum())  # the zero rows of dL/dE are the masked positions
    # Measured at seed 0: psnr 10.9 / 10.2 / 8.9 dB; unshuffled 10.7 / 10.0 / 7.3; shuffled 13.1 / 11.1 / 11.5.
    assert scores["psnr"] < 20
    # The corruption is not confined to the masked patches: the whole solve breaks.
    assert scores["psnr_unshuffled"] < 20 and scores["patch_psnr"] < 20


def test_batch_of_two_is_not_applicable() -> None:
    model = tiny(depth=2)
    obs = _observe(model, "vit_tiny_patch4_32", torch.rand(2, 3, 32, 32), depth=2)
    with pytest.raises(NotApplicable, match=r"batch size 1 \(got 2\)"):
        build_attack("april")(obs)


@pytest.mark.parametrize(("steps", "optimizer"), [(2, "sgd"), (1, "adam")])
def test_update_that_is_not_a_scaled_gradient_is_not_applicable(steps: int, optimizer: str) -> None:
    model = tiny(depth=2)
    obs = _observe(model, "vit_tiny_patch4_32", torch.rand(1, 3, 32, 32), depth=2)
    obs.kind, obs.local_steps, obs.local_optimizer = "update", steps, optimizer
    with pytest.raises(NotApplicable):
        build_attack("april")(obs)


def test_parameters_are_found_by_name_not_position(photo32: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = tiny(depth=2)
    obs = _observe(model, "vit_tiny_patch4_32", photo32, depth=2)
    obs.tensors = dict(reversed(list(obs.tensors.items())))
    assert _psnr(build_attack("april")(obs).images, photo32)["psnr"] >= EXACT_DB


def test_the_layout_is_built_once_per_architecture(photo32: torch.Tensor) -> None:
    from fedmjp.attacks.april import _layout

    obs, _ = _mjp_observation(photo32, "mjp", 0.25)
    assert _layout(obs) is _layout(obs)
    other = Observation(obs.model_name, {}, obs.tensors, model_kwargs={**obs.model_kwargs, "depth": 1})
    assert _layout(other) is not _layout(obs)


@pytest.mark.parametrize("ratio", [0.1, 0.5])
def test_the_pivoted_qr_solve_equals_the_svd_solve_even_when_rank_deficient(photo32: torch.Tensor,
                                                                             ratio: float) -> None:
    from fedmjp.attacks.april import solve_patches

    obs, _ = _mjp_observation(photo32, "mjp", ratio)
    rows = obs.tensors["pos_embed"].reshape(-1, obs.tensors["pos_embed"].shape[-1])[1:]
    fast, fast_rank = solve_patches(rows, obs.tensors["patch_embed.proj.weight"])
    svd, svd_rank = solve_patches(rows, obs.tensors["patch_embed.proj.weight"], driver="gelsd")
    assert fast_rank == svd_rank
    torch.testing.assert_close(fast, svd, rtol=1e-6, atol=1e-8)  # the same minimum-norm solution
