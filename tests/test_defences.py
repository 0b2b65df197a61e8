"""The defences' mechanics, one at a time: fixed position embedding, pruning, Flower's local DP."""

from __future__ import annotations

import math
import time

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, Metadata, MetricRecord, RecordDict

from clients.defence_mods import local_dp_mod, prune_mod
from fedmjp.audit.adversary import Adversary
from fedmjp.models.fixed_pos_embed import sincos_pos_embed
from fedmjp.defences.reply import from_weights, l2_norm, prune, to_weights
from fedmjp.errors import InputError
from fedmjp.federation.runconfig import run_config
from fedmjp.scenario import Arm, parse_scenario
from fedmjp.federation.train import trainable
from fedmjp.federation.workload import build_model, client_round

BASE = {
    "name": "defences",
    "device": "cpu",
    "data": {"source": "photos", "test_limit": 8},
    "clients": {"num_clients": 2},
    "training": {"rounds": 1, "mode": "fedsgd", "batch_size": 1},
    "model": {"name": "vit_tiny_patch4_32", "kwargs": {"depth": 1}},
}


def arm_with(**override) -> Arm:
    return parse_scenario({**BASE, "arms": {"a": override}}).arms["a"]


@pytest.fixture(scope="module")
def plain() -> Arm:
    return arm_with()


@pytest.fixture(scope="module")
def sent(plain: Arm) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in build_model(plain).state_dict().items()}


@pytest.fixture(scope="module")
def gradient(plain: Arm, sent) -> dict[str, torch.Tensor]:
    """A real FedSGD gradient of one photograph."""
    return client_round(plain, sent, 0, 1).result.tensors


def context_of(arm: Arm) -> Context:
    return Context(run_id=1, node_id=1, node_config={"partition-id": 0}, state=RecordDict(),
                   run_config=run_config([arm]))


def train_message(weights: dict[str, torch.Tensor]) -> Message:
    content = RecordDict({"arrays": ArrayRecord(weights), "config": ConfigRecord({"server-round": 1})})
    # As the ClientApp receives it (a server-side constructor needs a running ServerApp's identity).
    metadata = Metadata(run_id=1, message_id="m1", src_node_id=0, dst_node_id=1, reply_to_message_id="", group_id="",
                        created_at=time.time(), ttl=3600.0, message_type=MessageType.TRAIN)
    return Message(content=content, metadata=metadata)


def replying(tensors: dict[str, torch.Tensor]):
    """A ClientApp stand-in that replies with these tensors (the real client's reply format)."""

    def app(msg: Message, _: Context) -> Message:
        content = RecordDict({"arrays": ArrayRecord({k: v.clone() for k, v in tensors.items()}),
                              "metrics": MetricRecord({"num-examples": 1})})
        return Message(content=content, reply_to=msg)

    return app


def reply_tensors(reply: Message) -> dict[str, torch.Tensor]:
    assert not reply.has_error(), reply.error
    return reply.content["arrays"].to_torch_state_dict()


# --------------------------------------------------------------------------- fixed position embedding


def test_fixed_pos_embed_is_a_frozen_sincos_table_and_never_leaves_the_client(sent) -> None:
    arm = arm_with(model={"fixed_pos_embed": True})
    model = build_model(arm)
    assert not model.pos_embed.requires_grad and "pos_embed" not in trainable(model)
    assert torch.equal(model.pos_embed.detach(), sincos_pos_embed(model))
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    tensors = client_round(arm, weights, 0, 1).result.tensors
    assert "pos_embed" not in tensors and "patch_embed.proj.weight" in tensors
    assert set(tensors) == set(trainable(build_model(arm)))  # what the server expects


def test_april_says_not_applicable_without_a_pos_embed_gradient() -> None:
    arm = arm_with(model={"fixed_pos_embed": True}, audit={"attacks": [{"name": "april"}]})
    weights = {k: v.clone() for k, v in build_model(arm).state_dict().items()}
    tensors = client_round(arm, weights, 0, 1).result.tensors
    adversary = Adversary(arm)
    [outcome] = adversary.run(adversary.observation(weights, tensors, 1, server_round=1))
    assert outcome.status == "not-applicable" and "pos_embed" in outcome.reason


# --------------------------------------------------------------------------- pruning


def test_pruning_zeros_the_smallest_fraction_of_every_tensor(gradient) -> None:
    pruned = prune(gradient, 0.9)
    for name, tensor in gradient.items():
        kept = pruned[name] != 0
        zeros = 1 - kept.float().mean().item()
        assert int((~kept).sum()) >= math.floor(0.9 * tensor.numel()), name
        if kept.any() and (~kept).any():  # every kept entry is at least as large as every dropped one
            assert tensor[kept].abs().min() >= tensor[~kept].abs().max()
        assert torch.equal(pruned[name][kept], tensor[kept])


def test_prune_mod_prunes_the_reply_when_the_arm_says_so(sent, gradient) -> None:
    msg = train_message(sent)
    off = reply_tensors(prune_mod(msg, context_of(arm_with()), replying(gradient)))
    assert all(torch.equal(off[k], gradient[k]) for k in gradient)
    on = reply_tensors(prune_mod(msg, context_of(arm_with(defence={"prune": 0.75})), replying(gradient)))
    weight = on["patch_embed.proj.weight"]
    assert (weight == 0).float().mean().item() == pytest.approx(0.75, abs=1 / weight.numel())
    assert list(on) == list(gradient)


# --------------------------------------------------------------------------- local DP (Flower's LocalDpMod)


def test_weights_round_trip_is_exact_in_float64(sent, gradient) -> None:
    for kind in ("gradient", "update"):
        weights = to_weights(sent, gradient, kind)
        assert list(weights) == list(sent)  # Flower's mod requires the sent keys, in order
        back = from_weights(sent, weights, kind, list(gradient))
        assert all(torch.allclose(back[k], gradient[k], rtol=0, atol=1e-12) for k in gradient)


def test_local_dp_clips_the_reply_to_the_clipping_norm(sent, gradient) -> None:
    norm = l2_norm(gradient)
    clip = norm / 4
    # A huge epsilon: noise std ~1e-12, so what is left is Flower's clipping.
    arm = arm_with(defence={"dp": {"clipping_norm": clip, "epsilon": 1e12}})
    out = reply_tensors(local_dp_mod(train_message(sent), context_of(arm), replying(gradient)))
    assert list(out) == list(gradient) and all(out[k].dtype == torch.float32 for k in out)
    assert l2_norm(out) == pytest.approx(clip, rel=1e-4)
    direction = {k: gradient[k] * (clip / norm) for k in gradient}
    assert all(torch.allclose(out[k], direction[k], atol=1e-6) for k in gradient)


def test_local_dp_adds_gaussian_noise_of_the_configured_std_repeatably(sent, gradient) -> None:
    clip = l2_norm(gradient) / 4
    arm = arm_with(defence={"dp": {"clipping_norm": clip, "epsilon": 50.0, "delta": 1e-5}})
    expected_std = clip * math.sqrt(2 * math.log(1.25 / 1e-5)) / 50.0
    assert arm.defence.dp.noise_std == pytest.approx(expected_std)
    first = local_dp_mod(train_message(sent), context_of(arm), replying(gradient))
    out = reply_tensors(first)
    clipped = {k: gradient[k] * (clip / l2_norm(gradient)) for k in gradient}
    noise = torch.cat([(out[k] - clipped[k]).flatten() for k in gradient])
    assert noise.std().item() == pytest.approx(expected_std, rel=0.05)
    assert abs(noise.mean().item()) < 0.05 * expected_std
    assert first.content["metrics"]["defence.dp-noise-std"] == pytest.approx(expected_std)
    again = reply_tensors(local_dp_mod(train_message(sent), context_of(arm), replying(gradient)))
    assert all(torch.equal(out[k], again[k]) for k in out)  # seeded per round and client


def test_local_dp_is_off_unless_the_arm_enables_it(sent, gradient) -> None:
    out = reply_tensors(local_dp_mod(train_message(sent), context_of(arm_with()), replying(gradient)))
    assert all(torch.equal(out[k], gradient[k]) for k in gradient)


# --------------------------------------------------------------------------- schema


@pytest.mark.parametrize("override, message", [
    ({"defence": {"noise": 1}}, "arms.a.defence.noise: unknown key"),
    ({"defence": {"prune": 1.0}}, "arms.a.defence.prune: Input should be less than 1"),
    ({"defence": {"dp": {"clipping_norm": 1.0}}}, "arms.a.defence.dp.epsilon: Field required"),
    ({"defence": {"dp": {"epsilon": 1.0, "clipping_norm": 0}}}, "arms.a.defence.dp.clipping_norm: Input should be "
                                                                 "greater than 0"),
])
def test_bad_defence_settings_name_the_field(override, message) -> None:
    with pytest.raises(InputError) as err:
        arm_with(**override)
    assert message in str(err.value)
