"""The jigsaw shuffle, the MJP ViT and the registry, as specified by MJP (CVPR 2023)."""

from __future__ import annotations

import copy

import pytest
import timm
import torch

from fedmjp.models import MJPVisionTransformer, REGISTERED, block_mask, draw_jigsaw
from fedmjp.federation.train import compute_gradient, evaluate, local_update, resolve_device, seed_jigsaw

from .conftest import tiny


@pytest.mark.parametrize("ratio", [0.05, 0.1, 0.25, 0.5, 1.0])
@pytest.mark.parametrize("grid", [(8, 8), (14, 14)])
def test_block_mask_has_exactly_the_requested_size(ratio: float, grid: tuple[int, int]) -> None:
    for seed in range(5):
        mask, _ = block_mask(grid, ratio, generator=torch.Generator().manual_seed(seed))
        assert int(mask.sum()) == round(ratio * grid[0] * grid[1])


def test_block_mask_is_the_union_of_its_rectangles() -> None:
    mask, blocks = block_mask((14, 14), 0.4, min_block=4, generator=torch.Generator().manual_seed(3))
    union = torch.zeros_like(mask)
    for b in blocks:
        union[b.top : b.top + b.height, b.left : b.left + b.width] = True
    assert torch.equal(union, mask)
    # The bulk comes from real blocks (BEiT-style), not single-patch filler.
    assert max(b.height * b.width for b in blocks) >= 4


def test_permutation_moves_only_chosen_patches() -> None:
    jig = draw_jigsaw((8, 8), 4, 0.25, per_sample=True, generator=torch.Generator().manual_seed(0))
    assert jig.mask.shape == (4, 64)
    for mask, perm in zip(jig.mask, jig.perm):
        idx = torch.arange(64)
        assert torch.equal(perm[~mask], idx[~mask])
        assert sorted(perm[mask].tolist()) == sorted(idx[mask].tolist())
    assert not torch.equal(jig.mask[0], jig.mask[1])  # per-sample draws differ


def test_same_seed_gives_same_jigsaw() -> None:
    a = draw_jigsaw((14, 14), 2, 0.1, generator=torch.Generator().manual_seed(7))
    b = draw_jigsaw((14, 14), 2, 0.1, generator=torch.Generator().manual_seed(7))
    c = draw_jigsaw((14, 14), 2, 0.1, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a.mask, b.mask) and torch.equal(a.perm, b.perm)
    assert a.mask.shape == (1, 196)  # one draw per batch by default
    assert not (torch.equal(a.mask, c.mask) and torch.equal(a.perm, c.perm))


def _train_forward_backward(model: torch.nn.Module, x: torch.Tensor) -> None:
    model.train()
    model(x).square().sum().backward()


def test_shuffled_positions_use_the_unknown_embedding_and_get_zero_pos_embed_gradient() -> None:
    torch.manual_seed(0)
    model = tiny("mjp_vit_tiny_patch4_32", mjp_ratio=0.25)
    jig = draw_jigsaw((8, 8), 1, 0.25, generator=torch.Generator().manual_seed(1))
    with model.fixed_jigsaw(jig):
        _train_forward_backward(model, torch.randn(2, 3, 32, 32))
    rows = model.pos_embed.grad[0, 1:]  # patch rows (row 0 is the class token)
    shuffled = jig.mask[0]
    assert torch.all(rows[shuffled] == 0)
    assert torch.all(rows[~shuffled].abs().sum(-1) > 0)
    assert model.pos_embed.grad[0, 0].abs().sum() > 0  # CLS keeps its own embedding


def test_unknown_embedding_gradient_is_the_sum_over_shuffled_positions() -> None:
    torch.manual_seed(0)
    mjp = tiny("mjp_vit_tiny_patch4_32", mjp_ratio=0.25)
    jig = draw_jigsaw((8, 8), 1, 0.25, generator=torch.Generator().manual_seed(2))
    x = torch.randn(2, 3, 32, 32)
    with mjp.fixed_jigsaw(jig):
        _train_forward_backward(mjp, x)
    # The same network with the unknown vector written into the shuffled rows of an
    # ordinary position table, and the same shuffle: each row gets its own gradient.
    naive = tiny("mjp_vit_tiny_patch4_32", mjp_mode="naive")
    state = {k: v for k, v in mjp.state_dict().items() if not k.startswith(("unk_pos_embed", "dal_head"))}
    state["pos_embed"] = state["pos_embed"].clone()
    state["pos_embed"][0, 1:][jig.mask[0]] = mjp.unk_pos_embed.detach()[0, 0]
    naive.load_state_dict(state)
    with naive.fixed_jigsaw(jig):
        _train_forward_backward(naive, x)
    expected = naive.pos_embed.grad[0, 1:][jig.mask[0]].sum(0)
    torch.testing.assert_close(mjp.unk_pos_embed.grad[0, 0], expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["mjp_vit_tiny_patch4_32", "mjp_deit_small_patch16_224"])
def test_zero_ratio_or_eval_mode_matches_the_plain_timm_vit(name: str) -> None:
    torch.manual_seed(0)
    plain_name = name.removeprefix("mjp_")
    mjp = tiny(name, mjp_ratio=0.5)
    plain = tiny(plain_name)
    plain.load_state_dict(mjp.state_dict(), strict=False)
    size = 32 if "32" in name else 224
    x = torch.randn(2, 3, size, size)
    plain.eval()
    mjp.eval()
    torch.testing.assert_close(mjp(x), plain(x))  # eval: no shuffle, no mask
    mjp.mjp_ratio = 0.0
    mjp.train()
    plain.train()
    torch.testing.assert_close(mjp(x), plain(x))
    assert mjp.jigsaw is None


def test_training_forward_is_shuffled_and_recorded() -> None:
    model = tiny("mjp_vit_tiny_patch4_32", mjp_ratio=0.25)
    seed_jigsaw(model, 0)
    model.train()
    model(torch.randn(1, 3, 32, 32))
    assert model.jigsaw is not None and int(model.jigsaw.mask.sum()) == 16


def test_apply_prob_controls_the_share_of_shuffled_steps() -> None:
    model = tiny("mjp_vit_tiny_patch4_32", mjp_ratio=0.25, mjp_apply_prob=0.5)
    seed_jigsaw(model, 0)
    model.train()
    shuffled = 0
    with torch.no_grad():
        for _ in range(200):
            model(torch.zeros(1, 3, 32, 32))
            shuffled += model.jigsaw is not None
    assert 70 < shuffled < 130


def test_dal_loss_is_zero_for_a_perfect_prediction_and_positive_otherwise() -> None:
    model = tiny("mjp_vit_tiny_patch4_32", mjp_ratio=0.25)
    model.train()
    model(torch.randn(1, 3, 32, 32))
    assert model.dal_loss() > 0
    # A head that reads the coordinates straight out of the position table is perfect.
    with torch.no_grad():
        model.pos_embed[0, 1:, :2] = model.dal_targets()
        model.pos_embed[0, 1:, 2:] = 0
        model.dal_head.fc1.weight.copy_(torch.eye(192))
        model.dal_head.fc1.bias.zero_()
        model.dal_head.fc2.weight.zero_()
        model.dal_head.fc2.weight[0, 0] = 1
        model.dal_head.fc2.weight[1, 1] = 1
        model.dal_head.fc2.bias.zero_()
    assert model.dal_loss().item() == pytest.approx(0.0, abs=1e-6)


def test_naive_shuffle_keeps_ordinary_embeddings_and_has_no_dal() -> None:
    model = tiny("mjp_vit_tiny_patch4_32", mjp_mode="naive", mjp_ratio=0.25)
    assert model.unk_pos_embed is None and model.dal_head is None
    model.train()
    model(torch.randn(1, 3, 32, 32)).sum().backward()
    assert model.jigsaw is not None
    assert torch.all(model.pos_embed.grad[0, 1:].abs().sum(-1) > 0)


def test_a_few_training_steps_reduce_the_loss(photo32: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = tiny("mjp_vit_tiny_patch4_32", mjp_ratio=0.25)
    seed_jigsaw(model, 0)
    images = photo32.repeat(8, 1, 1, 1) * torch.linspace(0.3, 1.0, 8).view(8, 1, 1, 1)
    labels = torch.arange(8) % 2
    first = local_update(model, [(images, labels)], lr=1e-3, optimizer="adam").loss
    for _ in range(15):
        last = local_update(model, [(images, labels)], lr=1e-3, optimizer="adam").loss
    assert last < 0.5 * first


def test_fedsgd_gradient_is_keyed_by_name_and_leaves_weights_alone() -> None:
    model = tiny("mjp_vit_tiny_patch4_32", mjp_ratio=0.25)
    before = copy.deepcopy(model.state_dict())
    result = compute_gradient(model, torch.rand(2, 3, 32, 32), torch.tensor([0, 1]))
    names = {n for n, _ in model.named_parameters()}
    assert set(result.tensors) == names
    assert result.kind == "gradient" and result.num_examples == 2 and result.shuffled_steps == [True]
    assert result.dal_loss > 0
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def test_fedavg_update_is_the_weight_difference() -> None:
    model = tiny()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    batches = [(torch.rand(2, 3, 32, 32), torch.tensor([0, 1]))] * 3
    result = local_update(model, batches, lr=0.1)
    assert result.kind == "update" and result.num_examples == 6 and len(result.jigsaws) == 3
    for n, p in model.named_parameters():
        torch.testing.assert_close(result.tensors[n], p.detach() - before[n])


def test_evaluate_reports_top1_and_loss() -> None:
    model = tiny()
    out = evaluate(model, [(torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]))])
    assert 0.0 <= out["accuracy"] <= 1.0 and out["loss"] > 0 and out["count"] == 4


def test_device_auto_picks_cuda_only_when_present(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto").type == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(ValueError, match="device"):
        resolve_device("cuda")


@pytest.mark.parametrize("name", REGISTERED)
def test_every_registered_name_creates_saves_and_loads(name: str, tmp_path) -> None:
    model = tiny(name, depth=1)
    assert name in timm.list_models()
    path = tmp_path / "w.pth"
    torch.save(model.state_dict(), path)
    again = tiny(name, depth=1)
    again.load_state_dict(torch.load(path))
    for (k, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), k
    assert isinstance(model, MJPVisionTransformer) == name.startswith("mjp_")


@pytest.mark.parametrize("base", ["vit_tiny_patch16_224", "deit_small_patch16_224"])
def test_pretrained_loads_a_timm_checkpoint_from_a_local_file(base: str, tmp_path) -> None:
    source = tiny(base, depth=1)
    path = tmp_path / "timm.pth"
    torch.save(source.state_dict(), path)
    twin = tiny(f"mjp_{base}", depth=1, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    for k, v in source.state_dict().items():
        assert torch.equal(twin.state_dict()[k], v), k
    assert twin.unk_pos_embed is not None
