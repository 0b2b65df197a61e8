"""FedMJP: FedAvg's round hooks with seeded sampling, checked replies and a server optimiser."""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from fedmjp.federation.aggregate import ServerOptimizer
from fedmjp.federation.faults import reply_problem
from fedmjp.federation.train import ReplyKind

Fault = tuple[int, str]  # (partition id, reason)


@dataclass(frozen=True)
class Reply:
    """A usable training reply: who sent it (by the message it answers) and its tensors, converted once."""

    partition_id: int
    message: Message
    tensors: dict[str, torch.Tensor]

    @property
    def metrics(self) -> MetricRecord:
        return self.message.content["metrics"]

    @property
    def num_examples(self) -> int:
        return int(self.metrics["num-examples"])


@dataclass(frozen=True)
class CheckedReplies:
    """A round's replies split into usable ones and faults, both in partition order."""

    usable: list[Reply]
    faults: list[Fault]


class FedMJP(FedAvg):
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
        super().__init__(min_train_nodes=per_round, min_available_nodes=per_round)
        self.model = model
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

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> list[Message]:
        """One training message to each partition sampled this round (seeded, so runs repeat)."""
        config["server-round"] = server_round
        record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
        return self._messages(record, self.sample_partitions(), MessageType.TRAIN)

    def check_replies(self, sent: list[Message], replies: Iterable[Message]) -> CheckedReplies:
        """Usable replies (tensors converted once) and faults: errors, missing replies, non-finite or
        mis-shaped tensors.

        A reply maps to its partition by the message it answers (Flower set the sent messages' ids
        when it pushed them): an error reply for an unreachable node comes from the SuperLink, not
        from the node, and a node's own metrics are not trusted for it.
        """
        asked = {m.metadata.message_id: self.node_partitions[m.metadata.dst_node_id] for m in sent}
        usable: list[Reply] = []
        faults: list[Fault] = []
        answered: set[int] = set()
        for reply in replies:
            partition_id = asked.get(reply.metadata.reply_to_message_id)
            if partition_id is None:
                continue  # not an answer to this round's messages
            answered.add(partition_id)
            if reply.has_error():
                faults.append((partition_id, f"error: {reply.error.reason}"))
                continue
            if self.arrayrecord_key not in reply.content or "metrics" not in reply.content:
                faults.append((partition_id, "malformed reply: no arrays or metrics"))
                continue
            tensors = reply.content[self.arrayrecord_key].to_torch_state_dict()
            problem = reply_problem(tensors, self.expected)
            if problem is None:
                usable.append(Reply(partition_id, reply, tensors))
            else:
                faults.append((partition_id, problem))
        faults += [(pid, "no reply before the round's timeout") for pid in asked.values() if pid not in answered]
        return CheckedReplies(sorted(usable, key=lambda r: r.partition_id), sorted(faults))

    def aggregate_replies(self, replies: list[Reply]) -> MetricRecord | None:
        """Step the global model on the example-weighted mean of the replies; their mean metrics, or
        None (nothing aggregated) when fewer than ``min_replies`` are given."""
        if len(replies) < self.min_replies:
            return None
        self.optimizer.step([r.tensors for r in replies], [float(r.num_examples) for r in replies])
        return self.train_metrics_aggr_fn([r.message.content for r in replies], self.weighted_by_key)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid, *, partitions: list[int]
    ) -> list[Message]:
        """Federated evaluation: each of ``partitions`` evaluates one shard of the held-out split, so
        together (weighted by example count) they evaluate all of it once."""
        contents = []
        for shard, _ in enumerate(partitions):
            shard_config = ConfigRecord({**config, "server-round": server_round, "shard": shard,
                                         "shards": len(partitions)})
            contents.append(RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: shard_config}))
        return self._messages(contents, partitions, MessageType.EVALUATE)
