"""fedmjp ClientApp: trains its partition (MJP applied here) and replies with a gradient or update.

The reply carries the tensors as an ArrayRecord keyed by parameter name, and metrics the
server may see (num-examples, partition-id, losses). What it used (batch indices, jigsaw
masks) stays in ``context.state`` for the audit's leakage receipts, never in the reply.

In deployment every message starts a fresh ClientApp process (Flower >= 1.21), so this module's
imports are paid per message: each handler and mod imports what its message type needs (torch,
timm and the training code for training; the metrics, torchmetrics and scipy for receipts; the
attacks for a guard) and a partition query imports none of them. The wire's keys and codes come from
``fedmjp.protocol`` (light: no torch).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS

from fedmjp.protocol import (ACCURACY, ARRAYS, CE_LOSS, CONFIG, DAL_LOSS, LOSS, METRICS, NUM_EXAMPLES, PARTITION_ID,
                             PARTITION_QUERY, RECEIPT_QUERY, SERVER_ROUND, SHARD, SHARDS, ErrorCode, ReceiptAnswer,
                             ReceiptRequest, error)

from .context import arm_of, partition_mod, partition_of, remember_round, round_batch


def deferred(module: str, name: str, acts: Callable[[Message, Context], bool]) -> ClientAppCallable:
    """A mod imported from ``module`` only for the messages it ``acts`` on (it passes the others)."""
    def mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        if not acts(msg, context):
            return call_next(msg, context)
        return getattr(importlib.import_module(module, __package__), name)(msg, context, call_next)

    mod.__name__ = name
    return mod


def training(msg: Message, context: Context) -> bool:
    return msg.metadata.message_type == MessageType.TRAIN


def guarded_training(msg: Message, context: Context) -> bool:
    return training(msg, context) and arm_of(msg, context).guard.enabled


def checked_training(msg: Message, context: Context) -> bool:
    return training(msg, context) and arm_of(msg, context).guard.model_check


def secure_aggregation(msg: Message, context: Context) -> bool:
    """A stage of the SecAgg+ protocol (each carries the protocol's config record)."""
    return training(msg, context) and msg.has_content() and RECORD_KEY_CONFIGS in msg.content.config_records


# The first mod is the outermost: a reply is pruned, then noised (DP), then checked by the guard;
# before them all, a simulated node learns the partition the server assigned it, and received weights
# are checked for planted structure before anything trains on them (model check). Outside all of them,
# SecAgg+ answers its key-exchange stages and masks what the others let out.
app = ClientApp(mods=[deferred(".secure_aggregation", "secure_aggregation_mod", secure_aggregation),
                      partition_mod, deferred(".model_check", "model_check_mod", checked_training),
                      deferred(".guard", "guard_mod", guarded_training),
                      deferred(".defence_mods", "local_dp_mod", training),
                      deferred(".defence_mods", "prune_mod", training)])


@app.train()
def train(msg: Message, context: Context) -> Message:
    from fedmjp.federation.faults import before_training, corrupt, injected_fault
    from fedmjp.federation.workload import client_round

    arm = arm_of(msg, context)
    partition_id = partition_of(context)
    server_round = int(msg.content[CONFIG][SERVER_ROUND])
    weights = msg.content[ARRAYS].to_torch_state_dict()
    fault = injected_fault(arm, partition_id, server_round)
    before_training(fault, arm)
    work = client_round(arm, weights, partition_id, server_round)
    remember_round(context, msg, server_round, work)
    result = work.result
    metrics = MetricRecord(
        {
            NUM_EXAMPLES: result.num_examples,
            PARTITION_ID: partition_id,
            LOSS: result.loss,
            CE_LOSS: result.ce_loss,
            DAL_LOSS: result.dal_loss,
            # How it really trained (batch size used, steps, optimizer, lr, momentum): the replay attack reads it.
            **(result.settings.to_metrics() if result.settings else {}),
        }
    )
    content = RecordDict({ARRAYS: ArrayRecord(corrupt(fault, result.tensors)), METRICS: metrics})
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Federated evaluation: the global model on the shard of the held-out split the server names."""
    from fedmjp.federation.workload import build_model, evaluate_global

    arm = arm_of(msg, context)
    config = msg.content[CONFIG]
    model = build_model(arm)
    model.load_state_dict(msg.content[ARRAYS].to_torch_state_dict())
    out = evaluate_global(arm, model, int(config[SHARD]), int(config[SHARDS]))
    metrics = MetricRecord({NUM_EXAMPLES: int(out["count"]), ACCURACY: out["accuracy"], LOSS: out["loss"]})
    return Message(content=RecordDict({METRICS: metrics}), reply_to=msg)


@app.query(PARTITION_QUERY)
def partition(msg: Message, context: Context) -> Message:
    """Tell the server which partition this node holds (node ids are random per run)."""
    config = ConfigRecord({PARTITION_ID: partition_of(context)})
    return Message(content=RecordDict({CONFIG: config}), reply_to=msg)


@app.query(RECEIPT_QUERY)
def receipt(msg: Message, context: Context) -> Message:
    """Score the server's reconstructions against the batch used this round; return numbers only."""
    from fedmjp.audit.receipt import receipt_scores
    from fedmjp.audit.sent import received
    from fedmjp.federation.workload import dataset, stack

    request = ReceiptRequest.from_content(msg.content)
    arm = arm_of(msg, context)
    batch = round_batch(context, msg, request.server_round)
    if batch is None:
        return Message(error(ErrorCode.NO_ROUND_STATE,
                             f"no training state for arm {arm.name} round {request.server_round} on this node"),
                       reply_to=msg)
    indices, shuffled, steps = batch
    truth, labels = stack(dataset(arm, "train"), indices)
    scored = receipt_scores(truth, labels, shuffled, request.patch, [received(r) for r in request.reconstructions])
    answer = ReceiptAnswer(scored, steps, truth.numpy() if request.want_truth else None)
    return Message(content=answer.to_content(), reply_to=msg)
