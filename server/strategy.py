"""FedMJP: FedAvg's round hooks with seeded sampling, a server optimiser and a reply tap."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from fedmjp.aggregate import ServerOptimizer
from fedmjp.faults import reply_problem

# A tap sees every valid reply with the global weights it answered, before aggregation, and
# the failed ones as (partition id, reason).
ReplyTap = Callable[[int, ArrayRecord, list[Message], list[tuple[int, str]]], None]


class FedMJP(FedAvg):
    """Federated training of (MJP) ViTs on client gradients or updates.

    Parameters
    ----------
    model : torch.nn.Module
        The global model; stepped in place by the server optimiser.
    kind : str
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
    taps : list of ReplyTap
        Called with every round's usable replies and its faults before aggregation
        (the adversary).
    min_replies : int
        Fewest usable replies a round may aggregate; below it nothing is aggregated.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        kind: str,
        server_optimizer: str,
        server_lr: float,
        partition_nodes: dict[int, int],
        per_round: int,
        seed: int,
        taps: Iterable[ReplyTap] = (),
        min_replies: int = 1,
    ) -> None:
        super().__init__(fraction_evaluate=0.0, min_train_nodes=per_round, min_available_nodes=per_round)
        self.model = model
        self.optimizer = ServerOptimizer(model, kind, server_optimizer, server_lr)
        self.partition_nodes = dict(partition_nodes)
        self.per_round = per_round
        self.sampler = random.Random(seed)
        self.taps = list(taps)
        self.min_replies = min_replies
        self.sent: ArrayRecord | None = None
        self.sampled: list[int] = []
        self.sent_messages: list[Message] = []
        self.faults: list[tuple[int, str]] = []
        self.expected = {name: p.shape for name, p in self.optimizer.params.items()}

    def sample_partitions(self) -> list[int]:
        return sorted(self.sampler.sample(sorted(self.partition_nodes), self.per_round))

    def check_replies(
        self, replies: list[Message]
    ) -> tuple[list[tuple[Message, dict[str, torch.Tensor]]], list[tuple[int, str]]]:
        """Split replies into usable ones (with their tensors, converted once) and faults
        (partition id, reason): errors, missing replies, non-finite or mis-shaped tensors.

        Replies map to partitions by the message they answer: an error reply for an
        unreachable node comes from the SuperLink, not from the node.
        """
        asked = {m.metadata.message_id: pid for m, pid in zip(self.sent_messages, self.sampled)}

        def partition_of(reply: Message) -> int:
            return asked.get(reply.metadata.reply_to_message_id, -1)

        valid, errors = self._check_and_log_replies(replies, is_train=True, validate=False)
        faults = [(partition_of(m), f"error: {m.error.reason}") for m in errors]
        replied = {partition_of(m) for m in replies}
        faults += [(pid, "no reply before the round's timeout") for pid in self.sampled if pid not in replied]
        usable = []
        for msg in valid:
            tensors = msg.content[self.arrayrecord_key].to_torch_state_dict()
            problem = reply_problem(tensors, self.expected)
            if problem is None:
                usable.append((msg, tensors))
            else:
                faults.append((partition_of(msg), problem))
        return usable, sorted(faults)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        config["server-round"] = server_round
        self.sent = arrays
        record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
        self.sampled = self.sample_partitions()
        nodes = [self.partition_nodes[p] for p in self.sampled]
        # Kept so replies map back to partitions (Flower sets their ids when it pushes them).
        self.sent_messages = list(self._construct_messages(record, nodes, MessageType.TRAIN))
        return self.sent_messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Aggregate the usable replies; faults are kept in ``self.faults`` for the round's record."""
        usable, self.faults = self.check_replies(list(replies))
        for tap in self.taps:
            tap(server_round, self.sent, [msg for msg, _ in usable], self.faults)
        if len(usable) < self.min_replies:
            return None, None
        contents = [msg.content for msg, _ in usable]
        examples = [float(c["metrics"][self.weighted_by_key]) for c in contents]
        self.optimizer.step([tensors for _, tensors in usable], examples)
        metrics = self.train_metrics_aggr_fn(contents, self.weighted_by_key)
        return ArrayRecord(self.model.state_dict()), metrics
