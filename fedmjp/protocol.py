"""What crosses the wire between the ServerApp and the ClientApps, spelt once for both sides.

- the keys: records of a message's content, config entries, metric names, message types;
- ``ErrorCode``: the code of every error reply a client sends on purpose (the server decides by code, never by
  reading the reason);
- the encode / decode of every structure that travels: local settings, guard reports (in a reply's metrics, or
  in the error reply of a withheld update), receipt requests (reconstructions as NumPy arrays: callers convert
  tensors) and receipts.

Light on purpose: NumPy, never torch (a partition query must not pay for it); Flower's records are imported
where one is built, so the in-process loop (no Flower) reads local settings and guard reports with the same code.
fedmjp's lowest layer after ``errors``: it imports nothing else of fedmjp.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum, unique
from typing import TYPE_CHECKING, Any, ClassVar, Literal, get_args

import numpy as np

if TYPE_CHECKING:
    from flwr.app import Error, RecordDict

# --------------------------------------------------------------------------- keys

# Records of a message's content.
ARRAYS = "arrays"
CONFIG = "config"
METRICS = "metrics"
RECON = "recon"  # a receipt request: the reconstructions the server asks about
TRUTH = "truth"  # a receipt (opt-in, simulation only): the client's images, under TRUTH_IMAGES
TRUTH_IMAGES = "images"

# Config entries of the server's messages.
ARM = "arm"  # which arm of the run the message is about: its key in the run config (its name, or J/name)
SERVER_ROUND = "server-round"
# The partition a simulated node is assigned (also a reply metric and a deployed SuperNode's node config key).
PARTITION_ID = "partition-id"
SHARD = "shard"  # federated evaluation: the shard of the held-out split to evaluate, of SHARDS
SHARDS = "shards"

# Metrics of the clients' replies (and what a defence mod adds).
NUM_EXAMPLES = "num-examples"
LOSS = "loss"
CE_LOSS = "ce-loss"
DAL_LOSS = "dal-loss"
ACCURACY = "accuracy"
PRUNED = "defence.prune"
DP_NOISE_STD = "defence.dp-noise-std"

# Queries: the ClientApp's ``@app.query(NAME)`` answers message type ``query.NAME`` (Flower's MessageType.QUERY).
PARTITION_QUERY = "partition"
RECEIPT_QUERY = "receipt"
PARTITION_MESSAGE = f"query.{PARTITION_QUERY}"
RECEIPT_MESSAGE = f"query.{RECEIPT_QUERY}"


# --------------------------------------------------------------------------- error replies


@unique
class ErrorCode(IntEnum):
    """Codes of the error replies a fedmjp client sends on purpose (Flower's own codes are below 100)."""

    GUARD_WITHHELD = 7001  # the client guard withheld the update (judged too leaky, or unjudged)
    WRONG_PARTITION = 7002  # a node was sent a second, different partition
    MODEL_REFUSED = 7003  # the client model check refused the weights it received (planted-looking)
    NO_ROUND_STATE = 7004  # a receipt asked about an arm and round this node kept no training state for


# An error reason is a line for people, then optionally this marker and a JSON payload for the server.
_PAYLOAD = "\nfedmjp-payload: "


@dataclass(frozen=True)
class ErrorReply:
    """An error reply as the server reads it: fedmjp's code (None: Flower's or unknown), text, payload."""

    code: ErrorCode | None
    text: str
    payload: Mapping[str, Any]


def error(code: ErrorCode, text: str, payload: Mapping[str, Any] | None = None) -> Error:
    """The error a client replies with: ``text`` for people, ``payload`` (JSON-able) for the server."""
    from flwr.app import Error

    reason = text if payload is None else f"{text}{_PAYLOAD}{json.dumps(dict(payload), sort_keys=True)}"
    return Error(code=int(code), reason=reason)


def read_error(err: Error) -> ErrorReply:
    """Inverse of :func:`error` for any error reply; a payload that does not parse is left in the text."""
    try:
        code: ErrorCode | None = ErrorCode(err.code)
    except ValueError:
        code = None
    reason = err.reason or ""
    text, marker, encoded = reason.rpartition(_PAYLOAD)
    if code is None or not marker:
        return ErrorReply(code, reason, {})
    try:
        payload = json.loads(encoded)
    except json.JSONDecodeError:
        return ErrorReply(code, reason, {})
    return ErrorReply(code, text, payload if isinstance(payload, dict) else {})


# --------------------------------------------------------------------------- local settings

Optimizer = Literal["sgd", "adam", "adamw"]
# Reply metrics hold numbers only: the optimizer travels as its index here.
OPTIMIZERS: tuple[Optimizer, ...] = get_args(Optimizer)


@dataclass(frozen=True)
class LocalSettings:
    """How a client really trained this round: what a replaying attacker needs and the server cannot
    know from its config (a client with fewer examples than the batch size uses a smaller batch).

    ``batch_size`` is the largest batch of the round (all batches have it: remainders are dropped).
    """

    batch_size: int
    steps: int
    epochs: int
    optimizer: Optimizer = "sgd"
    lr: float = 0.0
    momentum: float = 0.0
    weight_decay: float = 0.0

    PREFIX: ClassVar[str] = "local."

    def to_metrics(self) -> dict[str, float]:
        p = self.PREFIX
        return {
            f"{p}batch-size": self.batch_size, f"{p}steps": self.steps, f"{p}epochs": self.epochs,
            f"{p}optimizer": OPTIMIZERS.index(self.optimizer), f"{p}lr": self.lr, f"{p}momentum": self.momentum,
            f"{p}weight-decay": self.weight_decay,
        }

    @classmethod
    def from_metrics(cls, metrics: Mapping[str, Any]) -> LocalSettings | None:
        """The settings a reply reported, or None when it reported none (an older client)."""
        p = cls.PREFIX
        if f"{p}steps" not in metrics:
            return None
        return cls(
            batch_size=int(metrics[f"{p}batch-size"]), steps=int(metrics[f"{p}steps"]),
            epochs=int(metrics[f"{p}epochs"]), optimizer=OPTIMIZERS[int(metrics[f"{p}optimizer"])],
            lr=float(metrics[f"{p}lr"]), momentum=float(metrics[f"{p}momentum"]),
            weight_decay=float(metrics[f"{p}weight-decay"]),
        )


# --------------------------------------------------------------------------- guard reports

# What a client guard did with its update.
GuardAction = Literal["pass", "noise", "withhold"]
GUARD_ACTIONS: tuple[GuardAction, ...] = get_args(GuardAction)
# ``GUARD_ATTACK`` of an update no attack judged (else the judge's index in ``Guard.chain()``).
UNJUDGED = -1
GUARD_ACTION = "guard.action"
GUARD_SECONDS = "guard.seconds"
GUARD_ATTACK = "guard.attack"
GUARD_PSNR = "guard.psnr"


@dataclass(frozen=True)
class GuardReport:
    """What a client guard reports: its action, the seconds it took, the attack that judged the update (its
    index in ``Guard.chain()``; None: none could) and the PSNR that attack reached."""

    action: GuardAction
    seconds: float
    judge: int | None = None
    psnr: float | None = None

    def to_metrics(self) -> dict[str, float]:
        """Numbers only: they travel in the reply's metrics, or as the payload of a withheld update's error."""
        metrics = {GUARD_ACTION: GUARD_ACTIONS.index(self.action), GUARD_SECONDS: self.seconds,
                   GUARD_ATTACK: UNJUDGED if self.judge is None else self.judge}
        if self.psnr is not None:
            metrics[GUARD_PSNR] = self.psnr
        return metrics

    @classmethod
    def from_metrics(cls, metrics: Mapping[str, Any]) -> GuardReport | None:
        """The report in a reply's metrics (or a withheld update's payload); None where there is none."""
        if not all(key in metrics for key in (GUARD_ACTION, GUARD_SECONDS, GUARD_ATTACK)):
            return None
        judge = int(metrics[GUARD_ATTACK])
        return cls(GUARD_ACTIONS[int(metrics[GUARD_ACTION])], float(metrics[GUARD_SECONDS]),
                   None if judge == UNJUDGED else judge,
                   float(metrics[GUARD_PSNR]) if GUARD_PSNR in metrics else None)


def withheld_error(report: GuardReport, text: str) -> Error:
    """The error reply of an update the guard withheld: ``text`` for people, the report for the server."""
    return error(ErrorCode.GUARD_WITHHELD, text, report.to_metrics())


def withheld_report(reply: ErrorReply) -> GuardReport | None:
    """The guard report of a withheld update's error reply; None for any other reply, or an unreadable one."""
    if reply.code != ErrorCode.GUARD_WITHHELD:
        return None
    try:
        return GuardReport.from_metrics(reply.payload)
    except (TypeError, ValueError, IndexError):  # free JSON: the record then says withheld, not by whom
        return None


# --------------------------------------------------------------------------- receipts


@dataclass(frozen=True)
class SentReconstruction:
    """One reconstruction the server asks a client to score: the images, the attack's start, the labels it
    recovered, and a patch-reading attack's patches with their positions (None where the attack has none)."""

    images: np.ndarray
    start: np.ndarray | None = None
    labels: np.ndarray | None = None
    patches: np.ndarray | None = None
    positions: np.ndarray | None = None

    FIELDS: ClassVar[tuple[tuple[str, str], ...]] = (
        ("rec", "images"), ("start", "start"), ("labels", "labels"), ("patches", "patches"),
        ("positions", "positions"))


@dataclass(frozen=True)
class ReceiptRequest:
    """The server asks the client that sent a reply to score its reconstructions of that round's batch."""

    arm: str  # the arm's key in the run (fedmjp.federation.runconfig)
    server_round: int
    patch: int
    reconstructions: list[SentReconstruction]
    want_truth: bool = False

    def to_content(self) -> RecordDict:
        from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

        arrays = {f"{part}-{i}": Array(np.asarray(value))
                  for i, rec in enumerate(self.reconstructions) for part, name in SentReconstruction.FIELDS
                  if (value := getattr(rec, name)) is not None}
        config = ConfigRecord({ARM: self.arm, "round": self.server_round, "patch": self.patch,
                               "count": len(self.reconstructions), "truth": self.want_truth})
        return RecordDict({RECON: ArrayRecord(arrays), CONFIG: config})

    @classmethod
    def from_content(cls, content: RecordDict) -> ReceiptRequest:
        config = content[CONFIG]
        arrays = {key: value.numpy() for key, value in content[RECON].items()}
        reconstructions = [SentReconstruction(**{name: arrays.get(f"{part}-{i}")
                                                 for part, name in SentReconstruction.FIELDS})
                           for i in range(int(config["count"]))]
        return cls(str(config[ARM]), int(config["round"]), int(config["patch"]), reconstructions,
                   bool(config["truth"]))


# (metrics, data-free baseline metrics) of one reconstruction, as the client scored it.
Scores = tuple[dict[str, float], dict[str, float]]
# Scores travel in one flat MetricRecord: "{i}.m.{key}" for reconstruction i's metrics and "{i}.b.{key}" for
# its baseline.
_PARTS = (("m", 0), ("b", 1))


def encode_scores(scored: list[Scores]) -> dict[str, float]:
    """Flatten [(metrics, baseline), ...] into the receipt's metric keys."""
    return {f"{i}.{part}.{key}": value
            for i, pair in enumerate(scored) for part, slot in _PARTS for key, value in pair[slot].items()}


def decode_scores(metrics: Mapping[str, Any], count: int) -> dict[int, Scores]:
    """Inverse of :func:`encode_scores` for ``count`` reconstructions."""
    scored: dict[int, Scores] = {i: ({}, {}) for i in range(count)}
    for name, value in metrics.items():
        index, part, key = name.split(".", 2)
        scored[int(index)][dict(_PARTS)[part]][key] = float(value)
    return scored


@dataclass(frozen=True)
class ReceiptAnswer:
    """What a client returns for a receipt request: numbers (and its images only when asked, in simulation)."""

    scored: list[Scores]
    shuffled: list[bool]  # which of the round's steps were shuffled (MJP)
    truth: np.ndarray | None = None

    def to_content(self) -> RecordDict:
        from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

        content = RecordDict({METRICS: MetricRecord(encode_scores(self.scored)),
                              CONFIG: ConfigRecord({"shuffled": self.shuffled})})
        if self.truth is not None:
            content[TRUTH] = ArrayRecord({TRUTH_IMAGES: Array(self.truth)})
        return content

    @classmethod
    def from_content(cls, content: RecordDict, count: int) -> ReceiptAnswer:
        """The answer to a request about ``count`` reconstructions."""
        scored = decode_scores(dict(content[METRICS]), count)
        truth = np.asarray(content[TRUTH][TRUTH_IMAGES].numpy()) if TRUTH in content else None
        return cls([scored[i] for i in range(count)], [bool(s) for s in content[CONFIG]["shuffled"]], truth)
