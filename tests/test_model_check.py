"""The client's model check: planted weights are refused, honest ones (at init and after training) are not;
the audit counts the models checked and refused."""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

import pytest
import timm
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, Metadata, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity
from typer.testing import CliRunner

import fedmjp.commands.audit  # noqa: F401  (registers the command)
from clients.context import partition_mod
from clients.model_check import model_check_mod
from fedmjp.attacks.imprint import plant_imprint, server_images
from fedmjp.audit import AuditStore
from fedmjp.audit.summary import summarize
from fedmjp.cli import app
from fedmjp.defences.model_check import check_weights
from fedmjp.protocol import ErrorCode
from fedmjp.federation.runconfig import run_arms_from_run_config, run_config
from fedmjp.scenario import parse_scenario
from fedmjp.federation.rundir import prepare_run_dir
from fedmjp.federation.train import compute_gradient
from server.rounds import run_arm
from server.partitions import Partitions

ARMS = {"vit": ("vit_tiny_patch4_32", {}), "mjp": ("mjp_vit_tiny_patch4_32", {"mjp_ratio": 0.25})}


@pytest.fixture(scope="module")
def photos() -> torch.Tensor:
    return server_images(32, 48)


def honest_and_planted(arm: str, photos: torch.Tensor) -> tuple[dict, dict]:
    name, kwargs = ARMS[arm]
    torch.manual_seed(0)
    honest = timm.create_model(name, depth=4, **kwargs).state_dict()
    planted = plant_imprint(name, honest, photos, model_kwargs={"depth": 4, **kwargs})
    return honest, planted


def trained(arm: str, weights: dict, photos: torch.Tensor, steps: int = 10) -> dict:
    """The honest model after some plain SGD steps on real photographs."""
    name, kwargs = ARMS[arm]
    model = timm.create_model(name, depth=4, **kwargs)
    model.load_state_dict(weights)
    labels = torch.arange(len(photos)) % 10
    for step in range(steps):
        batch = slice(8 * (step % 6), 8 * (step % 6) + 8)
        grads = compute_gradient(model, photos[batch], labels[batch]).tensors
        with torch.no_grad():
            for pname, p in model.named_parameters():
                p -= 0.05 * grads[pname]
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("arm", ARMS)
def test_planted_model_is_flagged_by_each_weight_test(arm: str, photos) -> None:
    honest, planted = honest_and_planted(arm, photos)
    fired = {f.test for f in check_weights(planted)}
    assert {"fc1_stable_rank", "fc2_equal_columns", "attention_zero"} <= fired
    assert "norm_jump" in {f.test for f in check_weights(planted, honest)}


@pytest.mark.parametrize("arm", ARMS)
def test_honest_model_is_not_flagged_at_init_or_after_training(arm: str, photos) -> None:
    honest, _ = honest_and_planted(arm, photos)
    assert check_weights(honest) == []
    after = trained(arm, honest, photos)
    assert not torch.equal(after["blocks.0.mlp.fc1.weight"], honest["blocks.0.mlp.fc1.weight"])
    assert check_weights(after, honest) == []


def test_a_tensor_whose_norm_jumps_a_thousandfold_is_flagged(photos) -> None:
    honest, _ = honest_and_planted("vit", photos)
    scaled = dict(honest, **{"head.weight": honest["head.weight"] * 1e3})
    [finding] = check_weights(scaled, honest)
    assert (finding.test, finding.tensor) == ("norm_jump", "head.weight")


# --------------------------------------------------------------------------- the Flower client mod

SCENARIO = {
    "name": "model-check", "device": "cpu", "data": {"source": "photos", "test_limit": 8},
    "clients": {"num_clients": 2}, "training": {"rounds": 1, "mode": "fedsgd", "batch_size": 1},
    "model": {"name": "vit_tiny_patch4_32", "kwargs": {"depth": 4}},
}


def context(model_check: bool) -> Context:
    arm = parse_scenario({**SCENARIO, "arms": {"a": {"guard": {"model_check": model_check}}}}).arms["a"]
    return Context(run_id=1, node_id=1, node_config={"partition-id": 0}, state=RecordDict(),
                   run_config=run_config([arm]))


def train_message(weights: dict[str, torch.Tensor], server_round: int = 1) -> Message:
    content = RecordDict({"arrays": ArrayRecord(weights), "config": ConfigRecord({"server-round": server_round})})
    metadata = Metadata(run_id=1, message_id=f"m{server_round}", src_node_id=0, dst_node_id=1,
                        reply_to_message_id="", group_id="", created_at=time.time(), ttl=3600.0,
                        message_type=MessageType.TRAIN)
    return Message(content=content, metadata=metadata)


def trains(msg: Message, _: Context) -> Message:
    """A ClientApp stand-in that says it trained."""
    return Message(content=RecordDict({"metrics": MetricRecord({"num-examples": 1})}), reply_to=msg)


def test_client_mod_refuses_a_planted_model_naming_the_test(photos) -> None:
    honest, planted = honest_and_planted("vit", photos)
    ctx = context(model_check=True)
    assert not model_check_mod(train_message(honest, 1), ctx, trains).has_error()
    reply = model_check_mod(train_message(planted, 2), ctx, trains)
    assert reply.has_error() and reply.error.code == ErrorCode.MODEL_REFUSED
    assert "model check: fc1_stable_rank on blocks.0.mlp.fc1.weight" in reply.error.reason


def test_client_mod_trains_on_a_planted_model_when_the_check_is_off(photos) -> None:
    _, planted = honest_and_planted("vit", photos)
    assert not model_check_mod(train_message(planted), context(model_check=False), trains).has_error()


# --------------------------------------------------------------------------- the audit of a checked run

GROWN = "blocks.0.mlp.fc1.weight"  # the tensor the stand-in clients' updates scale up
GROWTH = 20.0  # per aggregated round: under the check's 100x, but 400x over two rounds


def grows(msg: Message, _: Context) -> Message:
    """A ClientApp stand-in whose update scales GROWN by GROWTH (every other tensor stays put)."""
    weights = msg.content["arrays"].to_torch_state_dict()
    update = {name: (GROWTH - 1) * value if name == GROWN else torch.zeros_like(value)
              for name, value in weights.items()}
    return Message(content=RecordDict({"arrays": ArrayRecord(update),
                                       "metrics": MetricRecord({"num-examples": 1, "loss": 0.0})}), reply_to=msg)


class NodesInProcess:
    """A Grid stand-in: every node answers at once through the partition and model check mods, then ``grows``."""

    def __init__(self, contexts: dict[int, Context]) -> None:
        self.contexts = contexts
        self.replies: list[Message] = []

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        ids = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = msg.object_id  # as Flower's SuperLink stamps it
            # As the ClientApp's mods run: the partition the server assigns first, then the model check.
            self.replies.append(partition_mod(msg, self.contexts[msg.metadata.dst_node_id],
                                              lambda m, c: model_check_mod(m, c, grows)))
            ids.append(msg.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        replies, self.replies = self.replies, []
        return replies


def test_audit_counts_models_checked_and_refusals_of_planted_and_honest_models(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ServerApp's real rounds: round 2 plants for partition 0, which refuses; in round 3 partition 0
    still compares with round 1's weights, which GROWN outgrew 400x (an honest model refused), while
    partition 1, which trained in round 2, sees 20x and trains."""
    for key, value in (("_task_id", 1), ("_run_id", 1), ("_node_id", 0)):  # as Flower's ServerApp runtime sets it
        monkeypatch.setattr(TaskIdentity, key, value)
    scenario = parse_scenario({**SCENARIO, "training": {**SCENARIO["training"], "mode": "fedavg", "rounds": 3},
                               "guard": {"model_check": True},
                               "audit": {"server": {"kind": "imprint", "rounds": [2], "clients": [0],
                                                    "images": {"count": 32}}}})
    arm = scenario.arms["run"]
    run_dir = prepare_run_dir(scenario, tmp_path / "run")
    config = run_config([arm], run_dir)
    nodes = {pid + 1: Context(run_id=1, node_id=pid + 1, node_config={}, state=RecordDict(), run_config=config)
             for pid in (0, 1)}
    run_arm(NodesInProcess(nodes), run_arms_from_run_config(config)["run"], Partitions({0: 1, 1: 2}, assigned=True))

    faults = [(r.round, r.partition_id, r.info["planted"]) for r in AuditStore(run_dir).records() if r.status == "fault"]
    assert faults == [(2, 0, True), (3, 0, False)]
    summary = summarize(run_dir)["arms"]["run"]
    assert summary["model_check"] == {"checked": 6, "refused": 2, "refused_planted": 1, "refused_honest": 1}
    assert not summary["attacks"]  # the planted model never trained, so there was nothing to attack
    table = CliRunner().invoke(app, ["audit", str(run_dir)])
    assert "arm run: client model check: 6 model(s) checked, 2 refused (1 planted, 1 honest)" in table.output
