"""Trap weights (Boenisch et al.), a planting construction built apart from imprint: what it reads from one
gradient of planted weights on the ViT and its MJP twin, and where it says it cannot serve."""

from __future__ import annotations

import pytest
import timm
import torch

from fedmjp.audit.attack_case import build_client_model, run_single
from fedmjp.attacks import NotApplicable, build_attack, plants
from fedmjp.attacks.imprint import server_images
from fedmjp.attacks.trap import Trap
from fedmjp.scoring.batch_metrics import patch_recovery
from fedmjp.data.loading import load_dataset

ARMS = {"vit": ("vit_tiny_patch4_32", None), "mjp": ("mjp_vit_tiny_patch4_32", 0.25)}
DEPTH = 4  # three trap blocks and the last, honest one: test-sized
CLIENT_IMAGES = 3
# Patches read exactly at batch 1, mean over these photos (depth 4, seed 0): measured 0.16 for ViT and MJP (0.27,
# 0.17, 0.05: smooth photo crops repeat near-equal patches, which fire trap units together).
MIN_EXACT = 0.10


@pytest.fixture(scope="module")
def own_images() -> torch.Tensor:
    """The server's own images: crops of the built-in photographs from their train split."""
    return server_images(32, 64)


@pytest.fixture(scope="module")
def client_images() -> tuple[torch.Tensor, torch.Tensor]:
    """The client's: crops of the built-in photographs from their test split (no download, always present)."""
    test = load_dataset("photos", "test", 32)
    index = torch.randperm(len(test), generator=torch.Generator().manual_seed(0))[:CLIENT_IMAGES]
    return torch.stack([test[int(i)][0] for i in index]), torch.tensor([test[int(i)][1] for i in index])


def test_trap_is_a_registered_planting_attack() -> None:
    assert plants(build_attack("trap"))


def test_planted_weights_keep_every_name_shape_and_dtype(own_images) -> None:
    name, ratio = ARMS["mjp"]
    client = build_client_model(name, ratio, depth=DEPTH)
    honest = client.model.state_dict()
    planted = Trap().plant(name, honest, own_images, client.kwargs)
    assert {k: (v.shape, v.dtype) for k, v in planted.items()} == {k: (v.shape, v.dtype) for k, v in honest.items()}
    assert not planted["blocks.0.attn.proj.weight"].any()
    # Patch and position embeddings are the honest ones: trap weights plant nothing there.
    for key in ("patch_embed.proj.weight", "pos_embed", "unk_pos_embed", "cls_token"):
        assert torch.equal(planted[key], honest[key])


@pytest.mark.parametrize("arm", ARMS)
def test_batch_of_one_reads_patches_exactly_at_their_positions(own_images, client_images, arm: str) -> None:
    name, ratio = ARMS[arm]
    images, labels = client_images
    exact, placed, read = [], [], []
    for index in range(len(images)):
        client = build_client_model(name, ratio, depth=DEPTH)
        result = run_single(client, images[index : index + 1], Trap(), labels[index], seed=index, server_own=own_images)
        exact.append(result.metrics["patches_exact"])
        placed.append(result.metrics["patches_placed"])
        read.append(len(result.reconstruction.patches) / client.num_patches)
        assert result.reconstruction.threat_model.server == "malicious"
        assert result.reconstruction.threat_model.patch_read == "exact"
        # Every read is a patch of the image, and every patch read with a position sits at its own one
        # (a masked MJP patch reads as position -1).
        assert exact[-1] == pytest.approx(read[-1])
        positions = result.reconstruction.patch_positions
        located = patch_recovery(result.reconstruction.patches[positions >= 0], positions[positions >= 0],
                                 result.truth, client.patch_size)
        assert located["patches_placed"] == located["patches_exact"] == placed[-1]
    assert sum(exact) / len(exact) >= MIN_EXACT
    if arm == "vit":
        assert placed == exact


def test_not_applicable_where_the_embedding_cannot_pin_down_a_patch(own_images) -> None:
    # 48 values per 4-px patch need D >= 50 channels; 48 cannot hold them with LayerNorm's mean and scale.
    kwargs = {"depth": 2, "embed_dim": 48, "num_heads": 3}
    weights = timm.create_model("vit_tiny_patch4_32", **kwargs).state_dict()
    with pytest.raises(NotApplicable, match="D >= 3"):
        Trap().plant("vit_tiny_patch4_32", weights, own_images, kwargs)
