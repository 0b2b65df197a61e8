"""The wire between client and server: each error reply has its own code and the server decides by it, never
by the words of the reason; every structure that crosses comes back as it was sent; the protocol is light."""

from __future__ import annotations

import enum
import json
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.common.constant import ErrorCode as FlowerErrorCode
from flwr.supercore.task_identity import TaskIdentity

import fedmjp.protocol as protocol
from clients.app import app as client_app
from fedmjp.audit import AuditStore
from fedmjp.audit.records import append_fault_records, append_guard_records
from fedmjp.audit.summary import summarize
from fedmjp.federation.rundir import atomic_write
from fedmjp.federation.runconfig import run_arms_from_run_config, run_config
from fedmjp.protocol import (ErrorCode, GuardReport, LocalSettings, ReceiptAnswer, ReceiptRequest, SentReconstruction,
                             error, read_error, withheld_error, withheld_report)
from fedmjp.scenario import parse_scenario
from server.adversary import read_receipt
from server.closing import record
from server.rounds import Trained, evaluate_federated, open_arm
from server.partitions import Partitions
from server.strategy import FedMJP

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = {"name": "protocol", "device": "cpu", "data": {"source": "photos", "test_limit": 8},
            "clients": {"num_clients": 4, "per_round": 4},
            "training": {"rounds": 1, "mode": "fedsgd", "batch_size": 1},
            "model": {"name": "vit_tiny_patch4_32", "kwargs": {"depth": 1}}, "audit": {"attacks": []}}


@pytest.fixture(autouse=True)
def app_process_identity():
    """Messages read the run and node of the process they are made in: set as Flower's app processes set
    them, and put back."""
    saved = TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1
    yield
    TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved


def pushed(messages: Iterable[Message]) -> list[Message]:
    """The messages with the ids Flower stamps on them when it pushes them."""
    messages = list(messages)
    for i, message in enumerate(messages):
        message.metadata.__dict__["_message_id"] = f"m{i}"
    return messages


# --------------------------------------------------------------------------- codes


def test_every_error_code_of_the_protocol_is_unique_named_and_clear_of_flowers() -> None:
    enums = [v for v in vars(protocol).values()
             if isinstance(v, type) and issubclass(v, enum.IntEnum) and v.__module__ == protocol.__name__]
    assert enums == [ErrorCode]
    members = ErrorCode.__members__  # aliases included: a repeated value would be one
    assert len({code.value for code in members.values()}) == len(members)
    assert all(name.isidentifier() and name.isupper() and code.name == name for name, code in members.items())
    assert {"GUARD_WITHHELD", "WRONG_PARTITION", "MODEL_REFUSED", "NO_ROUND_STATE"} <= set(members)
    flowers = {v for k, v in vars(FlowerErrorCode).items() if not k.startswith("_") and isinstance(v, int)}
    assert not flowers & {code.value for code in ErrorCode}


def test_importing_the_protocol_imports_no_torch() -> None:
    code = "import sys, fedmjp.protocol; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"


# --------------------------------------------------------------------------- round trips


def test_an_error_reply_keeps_its_code_its_words_and_its_payload() -> None:
    sent = error(ErrorCode.MODEL_REFUSED, "refused by client model check: x", {"findings": 3})
    assert sent.code == ErrorCode.MODEL_REFUSED
    assert read_error(sent) == protocol.ErrorReply(ErrorCode.MODEL_REFUSED, "refused by client model check: x",
                                                   {"findings": 3})
    assert read_error(error(ErrorCode.WRONG_PARTITION, "holds 5")) == protocol.ErrorReply(
        ErrorCode.WRONG_PARTITION, "holds 5", {})


def test_an_error_of_flowers_or_an_unreadable_payload_is_read_as_words_only() -> None:
    flowers = Error(code=FlowerErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason="ClientApp raised")
    assert read_error(flowers) == protocol.ErrorReply(None, "ClientApp raised", {})
    broken = Error(code=ErrorCode.GUARD_WITHHELD, reason="withheld\nfedmjp-payload: {not json")
    assert read_error(broken).text == "withheld\nfedmjp-payload: {not json"
    assert withheld_report(read_error(broken)) is None


def test_local_settings_round_trip_through_reply_metrics() -> None:
    settings = LocalSettings(batch_size=3, steps=4, epochs=2, optimizer="adamw", lr=0.02, momentum=0.0,
                             weight_decay=0.05)
    assert LocalSettings.from_metrics(MetricRecord(settings.to_metrics())) == settings
    assert LocalSettings.from_metrics({"num-examples": 3.0}) is None


@pytest.mark.parametrize("report", [GuardReport("noise", 1.5, judge=2, psnr=31.25), GuardReport("pass", 0.5),
                                    GuardReport("withhold", 2.0, judge=0, psnr=99.0)])
def test_a_guard_report_round_trips_in_metrics_and_in_a_withheld_error(report: GuardReport) -> None:
    assert GuardReport.from_metrics(MetricRecord(report.to_metrics())) == report
    reply = read_error(withheld_error(report, "withheld by client guard: words"))
    assert (reply.code, reply.text, withheld_report(reply)) == (
        ErrorCode.GUARD_WITHHELD, "withheld by client guard: words", report)
    assert GuardReport.from_metrics({"loss": 1.0}) is None  # a reply from a client without a guard


def test_a_receipt_request_round_trips_its_reconstructions_as_arrays() -> None:
    rng = np.random.default_rng(0)
    full = SentReconstruction(rng.random((2, 3, 8, 8), dtype=np.float32), rng.random((2, 3, 8, 8), dtype=np.float32),
                              np.array([1, 7]), rng.random((5, 48), dtype=np.float32), np.array([0, 3, -1, 2, 9]))
    bare = SentReconstruction(rng.random((1, 3, 8, 8), dtype=np.float32))
    request = ReceiptRequest("mjp", 3, 4, [full, bare], want_truth=True)
    back = ReceiptRequest.from_content(request.to_content())
    assert (back.arm, back.server_round, back.patch, back.want_truth) == ("mjp", 3, 4, True)
    for ours, theirs in zip(request.reconstructions, back.reconstructions, strict=True):
        for name in ("images", "start", "labels", "patches", "positions"):
            sent, got = getattr(ours, name), getattr(theirs, name)
            assert (sent is None and got is None) or (got.dtype == sent.dtype and np.array_equal(got, sent)), name


@pytest.mark.parametrize("truth", [None, np.linspace(0, 1, 2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4)])
def test_a_receipt_round_trips_its_scores_steps_and_optional_images(truth: np.ndarray | None) -> None:
    scored = [({"psnr": 31.5, "ssim_shuffled": 0.2}, {"psnr": 11.0}), ({"psnr": 9.0}, {})]
    answer = ReceiptAnswer(scored, [True, False], truth)
    back = ReceiptAnswer.from_content(answer.to_content(), 2)
    assert (back.scored, back.shuffled) == (scored, [True, False])
    assert (back.truth is None) if truth is None else np.array_equal(back.truth, truth)
    receipt = read_receipt(Message(answer.to_content(), dst_node_id=1, message_type="query.receipt"), 2)
    assert receipt.scored == dict(enumerate(scored)) and receipt.shuffled == [True, False]


def test_the_clientapp_answers_the_protocols_partition_query() -> None:
    context = Context(run_id=1, node_id=42, node_config={"partition-id": 3}, state=RecordDict(), run_config={})
    [question] = pushed([Message(RecordDict(), dst_node_id=42, message_type=protocol.PARTITION_MESSAGE)])
    answer = client_app(question, context)
    assert not answer.has_error() and answer.content[protocol.CONFIG][protocol.PARTITION_ID] == 3


def test_a_receipt_for_a_round_the_client_kept_no_state_for_is_an_error_reply_with_its_code() -> None:
    arm = parse_scenario(SCENARIO).arms["run"]
    context = Context(run_id=1, node_id=42, node_config={"partition-id": 0}, state=RecordDict(),
                      run_config=run_config([arm]))
    request = ReceiptRequest(arm.name, 1, 4, [SentReconstruction(np.zeros((1, 3, 32, 32), np.float32))])
    [question] = pushed([Message(request.to_content(), dst_node_id=42, message_type=protocol.RECEIPT_MESSAGE)])
    answer = client_app(question, context)
    assert answer.has_error() and answer.error.code == ErrorCode.NO_ROUND_STATE
    assert read_receipt(answer, 1).error == "receipt: no training state for arm run round 1 on this node"


# --------------------------------------------------------------------------- the server decides by code

# Each partition's error reply; every reason carries the words of another kind, so only the code tells them apart.
WITHHELD = GuardReport("withhold", 0.5, judge=0, psnr=40.0)
ERRORS = {
    0: withheld_error(WITHHELD, "withheld by client guard: april PSNR 40.0 dB > 30.0"),
    1: error(ErrorCode.MODEL_REFUSED, "refused by client model check: attention_zero (not withheld by client guard)"),
    2: error(ErrorCode.WRONG_PARTITION, "this node holds partition 1, not 2"),
    3: Error(code=FlowerErrorCode.CLIENT_APP_RAISED_EXCEPTION,
             reason="refused by client model check; withheld by client guard"),
}


def strategy(model: torch.nn.Module, partitions: int = 4) -> FedMJP:
    return FedMJP(model, "gradient", "sgd", 1.0, {p: 10 + p for p in range(partitions)}, partitions, seed=0)


def test_the_server_tells_a_withheld_a_refused_and_a_wrong_partition_reply_apart_by_code(tmp_path: Path) -> None:
    model = torch.nn.Linear(2, 2)
    fed = strategy(model)
    sent = pushed(fed.configure_train(1, ArrayRecord(model.state_dict()), ConfigRecord({"arm": "run"})))
    by_node = {m.metadata.dst_node_id: m for m in sent}
    replies = [Message(ERRORS[p], reply_to=by_node[10 + p]) for p in (3, 1, 0, 2)]
    checked = fed.check_replies(sent, replies)
    assert not checked.usable
    assert [(f.partition_id, f.code) for f in checked.faults] == [
        (0, ErrorCode.GUARD_WITHHELD), (1, ErrorCode.MODEL_REFUSED), (2, ErrorCode.WRONG_PARTITION), (3, None)]
    assert [f.guard for f in checked.faults] == [WITHHELD, None, None, None]
    assert checked.faults[0].reason == "error: withheld by client guard: april PSNR 40.0 dB > 30.0"

    arm = parse_scenario({**SCENARIO, "guard": {"enabled": True, "model_check": True}}).arms["run"]
    atomic_write(tmp_path / "scenario.yaml", yaml.safe_dump({"name": "p", "arms": {
        arm.name: arm.model_dump(mode="json")}}).encode())
    store = AuditStore(tmp_path)
    append_guard_records(store, arm, 1, [], checked.faults)
    append_fault_records(store, arm.name, 1, checked.faults, planted={1})
    guard = [r for r in store.records() if r.source == "client-guard"]
    assert [(r.partition_id, r.status, r.attack, r.metrics) for r in guard] == [
        (0, "withheld", "april", {"psnr": 40.0})]  # the words of partitions 1 and 3 do not make them withheld
    faults = [r for r in store.records() if r.source == "fault"]
    assert [r.info for r in faults] == [
        {"planted": False, "error": "GUARD_WITHHELD"}, {"planted": True, "error": "MODEL_REFUSED"},
        {"planted": False, "error": "WRONG_PARTITION"}, {"planted": False}]
    check = summarize(tmp_path)["arms"]["run"]["model_check"]
    assert (check["refused"], check["refused_planted"], check["refused_honest"]) == (1, 1, 0)


# --------------------------------------------------------------------------- federated evaluation


class EvaluatingNodes:
    """A Grid stand-in: partition 0 evaluates, partition 1 fails, partition 2 answers without a loss, partition
    3 never answers."""

    def __init__(self) -> None:
        self.replies: list[Message] = []

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        messages = pushed(messages)
        for message in messages:
            partition = message.content["config"]["partition-id"]
            if partition == 0:
                metrics = {"num-examples": 8, "accuracy": 0.25, "loss": 2.0}
                self.replies.append(Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=message))
            elif partition == 1:
                self.replies.append(Message(Error(code=FlowerErrorCode.CLIENT_APP_RAISED_EXCEPTION,
                                                  reason="ClientApp raised"), reply_to=message))
            elif partition == 2:
                metrics = {"num-examples": 8, "accuracy": 0.5}
                self.replies.append(Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=message))
        return [m.metadata.message_id for m in messages]

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        replies, self.replies = self.replies, []
        return replies


def test_an_evaluation_error_reply_is_a_fault_recorded_in_the_audit_and_the_round(tmp_path: Path) -> None:
    arm = parse_scenario({**SCENARIO, "data": {**SCENARIO["data"], "evaluate_on": "clients"},
                          "clients": {**SCENARIO["clients"], "timeout": 0.2}}).arms["run"]
    entry = run_arms_from_run_config(run_config([arm], tmp_path))["run"]
    run = open_arm(EvaluatingNodes(), entry, Partitions({p: 10 + p for p in range(4)}, assigned=True))
    test = evaluate_federated(run, 1, [0, 1, 2, 3])
    assert (test.accuracy, test.loss, test.evaluated_on) == (0.25, 2.0, "clients")  # partition 0's alone
    assert [(f.partition_id, f.reason) for f in test.faults] == [
        (1, "error: ClientApp raised"), (2, "malformed reply: metrics without loss"),
        (3, "no reply before the round's timeout")]
    record(run, 1, Trained(MetricRecord({"loss": 1.0}), [], [], []), test, 0.5)
    [line] = [json.loads(text) for text in run.metrics_path.read_text().splitlines()]
    assert line["faults"][0] == {"partition_id": 1, "reason": "error: ClientApp raised", "phase": "evaluate"}
    audited = [(r.partition_id, r.status, r.reason, r.info) for r in AuditStore(tmp_path).records()]
    assert audited[0] == (1, "fault", "error: ClientApp raised", {"phase": "evaluate"})
    assert [a[0] for a in audited] == [1, 2, 3]
