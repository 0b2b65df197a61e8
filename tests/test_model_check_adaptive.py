"""The model check against a planting server that knows it, in a client's first round (no accepted weights):
the planter that knows the original weight-shape check passes it and still reads the batch; the current check
refuses that planter and plain imprint, and passes honest models; a planter that knows the current check passes
it too, and reads a batch of one (the check's known limit, published in the detector table)."""

from __future__ import annotations

import pytest
import timm
import torch

from fedmjp.audit.attack_case import ClientModel, run_single
from fedmjp.attacks.imprint import Imprint, server_images
from fedmjp.defences.model_check import ORIGINAL_TESTS, check_model, check_original
from fedmjp.federation.train import local_update

ARMS = {"vit": ("vit_tiny_patch4_32", {"depth": 4}),
        "mjp": ("mjp_vit_tiny_patch4_32", {"depth": 4, "mjp_ratio": 0.25})}


@pytest.fixture(scope="module")
def own() -> torch.Tensor:
    """The server's own images: the built-in public photographs."""
    return server_images(32, 128)


def honest(arm: str, seed: int = 0, **override: int) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    name, kwargs = ARMS[arm]
    torch.manual_seed(seed)
    model = timm.create_model(name, **kwargs | override)
    return model, {k: v.clone() for k, v in model.state_dict().items()}


def planted_round(arm: str, knows_check: str, images: torch.Tensor, labels: torch.Tensor, own: torch.Tensor,
                  **override: int):
    """What the planted client sends and the server reads: (planted weights, patches exact)."""
    name, kwargs = ARMS[arm]
    model, _ = honest(arm, **override)
    result = run_single(ClientModel(name, model, kwargs | override), images, Imprint(0, knows_check=knows_check), labels,
                        seed=0, server_own=own)
    return {k: v.clone() for k, v in model.state_dict().items()}, result.metrics["patches_exact"]


@pytest.mark.parametrize("arm", ARMS)
def test_a_planter_that_knows_the_original_check_passes_it_and_reads_a_batch_of_eight(arm, cifar, own) -> None:
    images, labels = cifar
    weights, exact = planted_round(arm, "original", images[:8], labels[:8], own, depth=12)  # ViT-Ti/4 as it is
    assert check_original(weights) == []
    assert exact >= 0.9


@pytest.mark.parametrize("arm", ARMS)
@pytest.mark.parametrize("knows_check", ["none", "original"])
def test_the_current_check_refuses_imprint_in_a_first_round(arm, knows_check, cifar, own) -> None:
    images, labels = cifar
    weights, _ = planted_round(arm, knows_check, images[:8], labels[:8], own)
    model, _ = honest(arm)
    fired = {f.test for f in check_model(model, weights, None, images[:8])}
    assert {"range", "parallel_units"} <= fired


def test_the_batch_tests_alone_refuse_the_original_planter(cifar, own) -> None:
    """Without the ranges, what the weights do to the client's batch gives them away."""
    images, labels = cifar
    weights, _ = planted_round("vit", "original", images[:8], labels[:8], own)
    model, _ = honest("vit")
    batch_tests = {f.test for f in check_model(model, weights, None, images[:8])} - {"range", *ORIGINAL_TESTS}
    assert "parallel_units" in batch_tests


def adam_rounds(arm: str, images: torch.Tensor, labels: torch.Tensor, rounds: int = 3):
    """Each round's global weights of a one-client FedAvg run with Adam at a high lr (3e-3), 4 steps a round."""
    model, weights = honest(arm)
    for _ in range(rounds):
        yield weights
        model.load_state_dict(weights)
        batches = [(images[i : i + 4], labels[i : i + 4]) for i in range(0, 16, 4)]
        update = local_update(model, batches, lr=3e-3, optimizer="adam").tensors
        after = {k: v + update[k] if k in update else v for k, v in weights.items()}
        assert not torch.equal(after["blocks.0.mlp.fc1.weight"], weights["blocks.0.mlp.fc1.weight"])
        weights = after


@pytest.mark.parametrize("arm", ARMS)
def test_the_current_check_passes_honest_models_at_init_and_after_high_lr_adam_rounds(arm, cifar) -> None:
    images, labels = cifar
    model, _ = honest(arm)
    for seed in range(2):
        _, weights = honest(arm, seed)
        for batch in (1, 8):
            assert check_model(model, weights, None, images[:batch]) == []
    previous = None
    for weights in adam_rounds(arm, images, labels):
        assert check_model(model, weights, previous, images[:8]) == []
        previous = weights


def test_a_planter_that_knows_the_current_check_passes_it_at_batch_one_and_reads_it(cifar, own) -> None:
    """The opponent is real: the check's limit (a batch of one, first round) as the detector table states it."""
    images, labels = cifar
    weights, exact = planted_round("vit", "current", images[:1], labels[:1], own)
    model, accepted = honest("vit")
    assert check_model(model, weights, None, images[:1]) == []
    assert exact >= 0.7  # 3 binning blocks here (0.86 measured); all 11 of ViT-Ti/4 read all 64 patches
    # With history, the jump from the accepted weights gives it away.
    assert "norm_jump" in {f.test for f in check_model(model, weights, accepted, images[:1])}


# --------------------------------------------------------------------------- fedmjp check

def save(weights: dict[str, torch.Tensor], path) -> str:
    torch.save(weights, path)
    return str(path)


def test_fedmjp_check_refuses_a_planted_file_and_accepts_an_honest_one(tmp_path, own) -> None:
    import json

    from typer.testing import CliRunner

    import fedmjp.commands.check  # noqa: F401  (registers the command)
    from fedmjp.cli import app
    from fedmjp.commands.check import REFUSED_EXIT

    folder = tmp_path / "images"
    folder.mkdir()
    from PIL import Image

    for i, image in enumerate(own[:8]):
        Image.fromarray(image.mul(255).byte().permute(1, 2, 0).numpy()).save(folder / f"{i}.png")
    base = ["check", "--model", "vit_tiny_patch4_32"]
    runner = CliRunner()
    twelve, _ = honest("vit", depth=12)  # the architecture `--model vit_tiny_patch4_32` builds
    full = {k: v.clone() for k, v in twelve.state_dict().items()}
    planted_full = Imprint(0).plant("vit_tiny_patch4_32", full, own, {})
    refused = runner.invoke(app, [*base, "--weights", save(planted_full, tmp_path / "p12.pt"), "--images",
                                  str(folder), "--json"])
    assert refused.exit_code == REFUSED_EXIT, refused.output
    report = json.loads(refused.stdout)
    assert report["refused"] is True and report["tests"] == ["weights", "batch"]
    assert {"test", "tensor", "value", "bound"} <= set(report["findings"][0])
    assert {"range", "parallel_units"} <= {f["test"] for f in report["findings"]}
    accepted = runner.invoke(app, [*base, "--weights", save(full, tmp_path / "h.pt"), "--accepted",
                                   save(full, tmp_path / "a.pt"), "--images", str(folder), "--json"])
    assert accepted.exit_code == 0, accepted.output
    assert json.loads(accepted.stdout) == {"refused": False, "tests": ["weights", "history", "batch"], "findings": []}
    table = runner.invoke(app, [*base, "--weights", str(tmp_path / "p12.pt")])
    assert table.exit_code == REFUSED_EXIT and "refuse:" in table.output and "range" in table.output
    missing = runner.invoke(app, [*base, "--weights", str(tmp_path / "nope.pt")])
    assert missing.exit_code == 2 and "--weights: no such file" in missing.output
