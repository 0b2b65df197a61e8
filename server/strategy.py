"""FedMJP: seeded sampling, checked replies and a server optimiser; federated evaluation by shards.

A plain class, not a Flower strategy: the ServerApp's round calls each step by name (``server/app.py``), and
of Flower's strategies it uses only the example-weighted averaging of metrics.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords

from fedmjp.audit.records import Fault
from fedmjp.federation.aggregate import ServerOptimizer
from fedmjp.federation.faults import reply_problem
from fedmjp.federation.train import ReplyKind
from fedmjp.protocol import (ACCURACY, ARRAYS, CONFIG, LOSS, METRICS, NUM_EXAMPLES, SERVER_ROUND, SHARD, SHARDS,
                             read_error, withheld_report)

NO_REPLY = "no reply before the round's timeout"
# What an evaluation reply's metrics must hold to be averaged.
EVALUATED = (NUM_EXAMPLES, ACCURACY, LOSS)


def error_fault(partition_id: int, reply: Message) -> Fault:
    """The fault of an error reply, told apart by its code (a withheld update carries its guard report)."""
    error = read_error(reply.error)
    return Fault(partition_id, f"error: {error.text}", error.code, withheld_report(error))


@dataclass(frozen=True)
class Reply:
    """A usable training reply: who sent it (by the message it answers) and its tensors, converted once."""

    partition_id: int
    message: Message
    tensors: dict[str, torch.Tensor]

    @property
    def metrics(self) -> MetricRecord:
        return self.message.content[METRICS]

    @property
    def num_examples(self) -> int:
        return int(self.metrics[NUM_EXAMPLES])


@dataclass(frozen=True)
class CheckedReplies:
    """A round's replies split into usable ones and faults, both in partition order."""

    usable: list[Reply]
    faults: list[Fault]


@dataclass(frozen=True)
class CheckedEvaluation:
    """A federated evaluation's replies split into usable ones (in the order they came, which the average
    sums in) and faults (in partition order)."""

    usable: list[Message]
    faults: list[Fault]


class FedMJP:
    """Federated training of (MJP) ViTs on client gradients or updates.

    Parameters
    ----------
    model : torch.nn.Module
        The global model; stepped in place by the server optimiser.
    kind : ReplyKind
        ``"gradient"`` (FedSGD replies) or ``"update"`` (FedAvg replies).
    server_optimizer : str
        ``sgd``, ``adam`` or ``adamw``; applied to the weighted mean of the replies.
    server_lr : float
        Server learning rate (SGD at 1.0 on updates is plain FedAvg).
    partition_nodes : dict[int, int]
        Partition id -> node id; sampling draws partition ids, so runs repeat even though
        node ids are random per run.
    per_round : int
        Clients sampled per round.
    seed : int
        Seeds the sampler (Flower's own sampler uses the global ``random``).
    min_replies : int
        Fewest usable replies a round may aggregate; below it nothing is aggregated.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        kind: ReplyKind,
        server_optimizer: str,
        server_lr: float,
        partition_nodes: dict[int, int],
        per_round: int,
        seed: int,
        min_replies: int = 1,
    ) -> None:
        self.optimizer = ServerOptimizer(model, kind, server_optimizer, server_lr)
        self.partition_nodes = dict(partition_nodes)
        self.node_partitions = {node: pid for pid, node in self.partition_nodes.items()}
        self.per_round = per_round
        self.sampler = random.Random(seed)
        self.min_replies = min_replies
        self.expected = {name: p.shape for name, p in self.optimizer.params.items()}

    def sample_partitions(self) -> list[int]:
        return sorted(self.sampler.sample(sorted(self.partition_nodes), self.per_round))

    def _messages(self, content: RecordDict | list[RecordDict], partitions: list[int], kind: str) -> list[Message]:
        contents = content if isinstance(content, list) else [content] * len(partitions)
        return [Message(content=c, dst_node_id=self.partition_nodes[p], message_type=kind)
                for c, p in zip(contents, partitions)]

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord) -> list[Message]:
        """One training message to each partition sampled this round (seeded, so runs repeat)."""
        config[SERVER_ROUND] = server_round
        record = RecordDict({ARRAYS: arrays, CONFIG: config})
        return self._messages(record, self.sample_partitions(), MessageType.TRAIN)

    def _answers(self, sent: list[Message], replies: Iterable[Message]
                 ) -> tuple[list[tuple[int, Message]], list[Fault]]:
        """(partition, reply) of each answer to ``sent``, and a fault for each partition that did not answer.

        A reply maps to its partition by the message it answers (Flower set the sent messages' ids
        when it pushed them): an error reply for an unreachable node comes from the SuperLink, not
        from the node, and a node's own metrics are not trusted for it.
        """
        asked = {m.metadata.message_id: self.node_partitions[m.metadata.dst_node_id] for m in sent}
        answers = [(asked[r.metadata.reply_to_message_id], r) for r in replies
                   if r.metadata.reply_to_message_id in asked]  # others answer another exchange
        answered = {partition_id for partition_id, _ in answers}
        return answers, [Fault(p, NO_REPLY) for p in asked.values() if p not in answered]

    def check_replies(self, sent: list[Message], replies: Iterable[Message]) -> CheckedReplies:
        """Usable replies (tensors converted once) and faults: errors, missing replies, non-finite or
        mis-shaped tensors."""
        answers, faults = self._answers(sent, replies)
        usable: list[Reply] = []
        for partition_id, reply in answers:
            if reply.has_error():
                faults.append(error_fault(partition_id, reply))
                continue
            if ARRAYS not in reply.content or METRICS not in reply.content:
                faults.append(Fault(partition_id, "malformed reply: no arrays or metrics"))
                continue
            tensors = reply.content[ARRAYS].to_torch_state_dict()
            problem = reply_problem(tensors, self.expected)
            if problem is None:
                usable.append(Reply(partition_id, reply, tensors))
            else:
                faults.append(Fault(partition_id, problem))
        return CheckedReplies(sorted(usable, key=lambda r: r.partition_id), by_partition(faults))

    def aggregate_replies(self, replies: list[Reply]) -> MetricRecord | None:
        """Step the global model on the example-weighted mean of the replies; their mean metrics, or
        None (nothing aggregated) when fewer than ``min_replies`` are given."""
        if len(replies) < self.min_replies:
            return None
        self.optimizer.step([r.tensors for r in replies], [float(r.num_examples) for r in replies])
        return self.mean_metrics([r.message.content for r in replies])

    @staticmethod
    def mean_metrics(contents: list[RecordDict]) -> MetricRecord:
        """The example-weighted mean of the metrics of replies' contents."""
        return aggregate_metricrecords(contents, NUM_EXAMPLES)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           partitions: list[int]) -> list[Message]:
        """Federated evaluation: each of ``partitions`` evaluates one shard of the held-out split, so
        together (weighted by example count) they evaluate all of it once."""
        contents = []
        for shard, _ in enumerate(partitions):
            shard_config = ConfigRecord({**config, SERVER_ROUND: server_round, SHARD: shard, SHARDS: len(partitions)})
            contents.append(RecordDict({ARRAYS: arrays, CONFIG: shard_config}))
        return self._messages(contents, partitions, MessageType.EVALUATE)

    def check_evaluation(self, sent: list[Message], replies: Iterable[Message]) -> CheckedEvaluation:
        """Usable evaluation replies and faults: errors, missing replies, metrics without what is averaged."""
        answers, faults = self._answers(sent, replies)
        usable: list[Message] = []
        for partition_id, reply in answers:
            if reply.has_error():
                faults.append(error_fault(partition_id, reply))
            elif problem := evaluation_problem(reply):
                faults.append(Fault(partition_id, problem))
            else:
                usable.append(reply)
        return CheckedEvaluation(usable, by_partition(faults))

    @staticmethod
    def aggregate_evaluation(replies: list[Message]) -> MetricRecord | None:
        """The example-weighted mean of the usable evaluation replies' metrics; None when there are none."""
        return aggregate_metricrecords([r.content for r in replies], NUM_EXAMPLES) if replies else None


def evaluation_problem(reply: Message) -> str | None:
    """Why an evaluation reply cannot be averaged (None: it can)."""
    if METRICS not in reply.content:
        return "malformed reply: no metrics"
    missing = [key for key in EVALUATED if key not in reply.content[METRICS]]
    return f"malformed reply: metrics without {', '.join(missing)}" if missing else None


def by_partition(faults: list[Fault]) -> list[Fault]:
    return sorted(faults, key=lambda f: (f.partition_id, f.reason))
