"""The round's audit: the curious server attacks the selected replies before aggregation, asks the
clients that sent them for leakage receipts (numbers only, all in one exchange) and appends the
audit records; it also records what the clients' guards reported and the round's faults."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from flwr.app import ArrayRecord, Message, RecordDict
from flwr.serverapp import Grid

from fedmjp.audit import AuditRecord, AuditStore
from fedmjp.attacks import NotApplicable
from fedmjp.audit.adversary import Adversary, Outcome
from fedmjp.audit.sent import to_send
from fedmjp.audit.records import Receipt, append_attack_records, append_fault_records, append_guard_records
from fedmjp.protocol import (ARRAYS, CONFIG, RECEIPT_MESSAGE, GuardReport, ReceiptAnswer, ReceiptRequest,
                             read_error)
from fedmjp.scenario import Arm, SecureAggregation

from .exchange import send_and_receive
from .secure_aggregation import SecureRound
from .strategy import CheckedReplies, Reply


@dataclass
class Attacked:
    """What the server attacked (a client's reply, or the aggregate that holds it), with the outcomes and
    (later) that client's receipt for them."""

    partition_id: int
    node_id: int
    num_examples: int
    outcomes: list[Outcome]
    receipt: Receipt | None = None
    threat: dict[str, Any] = field(default_factory=dict)  # what the record adds to the attack's threat model

    @classmethod
    def of_reply(cls, reply: Reply, outcomes: list[Outcome]) -> Attacked:
        return cls(reply.partition_id, reply.message.metadata.src_node_id, reply.num_examples, outcomes)

    @property
    def reconstructed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "attacked"]


class RoundAuditor:
    """The arm's adversary and audit trail; it never sees client data."""

    def __init__(self, arm: Arm, key: str, grid: Grid, store: AuditStore, patch: int) -> None:
        self.arm = arm
        self.key = key  # how the run's messages name the arm
        self.grid = grid
        self.store = store
        self.patch = patch
        self.adversary = Adversary(arm)

    def plant(self, server_round: int, messages: list[Message], partition_of: dict[int, int]
              ) -> tuple[list[Message], dict[int, dict[str, torch.Tensor]]]:
        """A dishonest round: the targets' messages carry planted weights instead of the global ones.

        Returns the messages to send and {partition id: the weights it got} for the planted ones. A model
        the attack cannot plant is sent honestly and the audit records why.
        """
        server = self.arm.audit.server
        if not server.plants(server_round):
            return messages, {}
        targets = set(server.targets([partition_of[m.metadata.dst_node_id] for m in messages]))
        if not targets:
            return messages, {}
        content = messages[0].content
        try:
            weights = self.adversary.plant(content[ARRAYS].to_torch_state_dict())
        except NotApplicable as exc:
            for partition_id in sorted(targets):
                self.store.append(AuditRecord(arm=self.arm.name, round=server_round, partition_id=partition_id,
                                              attack=server.kind, status="not-applicable", reason=str(exc)))
            return messages, {}
        planted_content = RecordDict({ARRAYS: ArrayRecord(weights), CONFIG: content[CONFIG]})
        out = [Message(content=planted_content, dst_node_id=m.metadata.dst_node_id,
                       message_type=m.metadata.message_type)
               if partition_of[m.metadata.dst_node_id] in targets else m for m in messages]
        return out, {p: weights for p in targets}

    def secure_aggregation(self, server_round: int, planted: dict[int, dict[str, torch.Tensor]], clients: int
                           ) -> tuple[SecureAggregation, bool]:
        """The SecAgg+ settings of the round, and whether the planting server tuned them to its planting."""
        settings = self.arm.training.secure_aggregation
        if not planted or not self.arm.audit.server.tunes_secure_aggregation:
            return settings, False
        return self.adversary.tuned_secure_aggregation(next(iter(planted.values())), settings, clients,
                                                       server_round), True

    def audit(self, server_round: int, sent: ArrayRecord, checked: CheckedReplies,
              planted: dict[int, dict[str, torch.Tensor]] | None = None) -> None:
        """Attack, collect receipts and append the round's records: guards, attacks, faults.

        Replies to planted weights go to the planting attack (and never into the aggregate)."""
        self._record_guards(server_round, checked)
        audit = self.arm.audit
        planted = planted or {}
        attacked = [self._attack_planted(planted[r.partition_id], r, server_round)
                    for r in checked.usable if r.partition_id in planted]
        if audit.attacks and audit.attacks_round(server_round):
            weights = sent.to_torch_state_dict()
            by_partition = {r.partition_id: r for r in checked.usable if r.partition_id not in planted}
            attacked += [self._attack(weights, by_partition[p], server_round)
                         for p in audit.targets(list(by_partition))]
        self._record_attacks(server_round, attacked)
        append_fault_records(self.store, self.arm.name, server_round, checked.faults, planted=set(planted))

    def audit_aggregate(self, server_round: int, sent: ArrayRecord, secure: SecureRound,
                        planted: dict[int, dict[str, torch.Tensor]], tuned: bool = False) -> None:
        """Under SecAgg+: attack the aggregate (the planting attack when the round was planted, for every
        client), ask every client in it to score the reconstructions against its own batch, and append the
        records, one per client, each tagged with the aggregate it came from; and the drop-outs."""
        attacking = self.arm.audit.attacks and self.arm.audit.attacks_round(server_round)
        if secure.aggregate is not None and (planted or attacking):
            # Every sampled client got the same weights: the planted ones in a planted round.
            weights = next(iter(planted.values())) if planted else sent.to_torch_state_dict()
            # The clients' reported local settings (all follow the round's config); a FedAvg sum is read as one
            # update over all the round's examples, which it is only approximately.
            metrics = secure.contributors[0].metrics if secure.contributors else None
            obs = self.adversary.observation(weights, secure.aggregate, secure.num_examples, server_round,
                                             None if planted else metrics)
            outcomes = self.adversary.run_planted(obs) if planted else self.adversary.run(obs)
            threat = {"aggregate": "secagg+", "clients": len(secure.contributors),
                      "secagg_settings": "tuned by the server" if tuned else "scenario"}
            self._record_attacks(server_round, [Attacked(c.partition_id, c.node_id, c.num_examples, outcomes,
                                                         threat=threat) for c in secure.contributors])
        append_fault_records(self.store, self.arm.name, server_round, secure.faults, planted=set(planted))

    def _record_attacks(self, server_round: int, attacked: list[Attacked]) -> None:
        if not attacked:
            return
        self._collect_receipts(server_round, attacked)
        for item in attacked:
            append_attack_records(self.store, self.arm.name, server_round, item.partition_id, item.num_examples,
                                  item.outcomes, item.receipt, item.threat)

    def _attack(self, weights: dict[str, torch.Tensor], reply: Reply, server_round: int) -> Attacked:
        obs = self.adversary.observation(weights, reply.tensors, reply.num_examples, server_round, reply.metrics)
        return Attacked.of_reply(reply, self.adversary.run(obs))

    def _attack_planted(self, weights: dict[str, torch.Tensor], reply: Reply, server_round: int) -> Attacked:
        obs = self.adversary.observation(weights, reply.tensors, reply.num_examples, server_round)
        return Attacked.of_reply(reply, self.adversary.run_planted(obs))

    def _collect_receipts(self, server_round: int, attacked: list[Attacked]) -> None:
        """Every client with a reconstruction scores it; the questions go out together."""
        asking = [item for item in attacked if item.reconstructed]
        questions = [
            Message(content=ReceiptRequest(self.key, server_round, self.patch,
                                           [to_send(o.reconstruction) for o in item.reconstructed],
                                           self.arm.audit.store_ground_truth).to_content(),
                    dst_node_id=item.node_id, message_type=RECEIPT_MESSAGE)
            for item in asking
        ]
        if not questions:
            return
        answers = send_and_receive(self.grid, questions, timeout=self.arm.audit.receipt_timeout)
        by_question = {a.metadata.reply_to_message_id: a for a in answers}
        for item, question in zip(asking, questions):
            item.receipt = read_receipt(by_question.get(question.metadata.message_id), len(item.reconstructed))

    def _record_guards(self, server_round: int, checked: CheckedReplies) -> None:
        """What each client's guard measured and allowed out (it reports it in its metrics, or in the error
        reply that withheld its update), with the attack that really judged."""
        if not self.arm.guard.enabled:
            return
        sent = [(reply.partition_id, reply.num_examples, report) for reply in checked.usable
                if (report := GuardReport.from_metrics(reply.metrics)) is not None]
        append_guard_records(self.store, self.arm, server_round, sent, checked.faults)


def read_receipt(answer: Message | None, count: int) -> Receipt:
    """A client's receipt for ``count`` reconstructions, or why there is none."""
    if answer is None:
        return Receipt({}, error="receipt: no reply")
    if answer.has_error():
        return Receipt({}, error=f"receipt: {read_error(answer.error).text}")
    receipt = ReceiptAnswer.from_content(answer.content, count)
    truth = None if receipt.truth is None else torch.from_numpy(receipt.truth)
    return Receipt(dict(enumerate(receipt.scored)), truth, receipt.shuffled)
