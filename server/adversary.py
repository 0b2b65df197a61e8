"""The round's audit: the curious server attacks the selected replies before aggregation, asks the
clients that sent them for leakage receipts (numbers only, all in one exchange) and appends the
audit records; it also records what the clients' guards reported and the round's faults."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from fedmjp.audit import AuditRecord, AuditStore
from fedmjp.attacks import NotApplicable
from fedmjp.audit.adversary import Adversary, Outcome
from fedmjp.audit.guard import WITHHELD, guard_record, withheld_record
from fedmjp.audit.receipt import decode_scores
from fedmjp.audit.records import Receipt, append_attack_records
from fedmjp.federation.runconfig import ARM_KEY
from fedmjp.scenario import Arm

from .exchange import send_and_receive
from .strategy import CheckedReplies, Fault, Reply

RECEIPT = "query.receipt"


def _array(t: torch.Tensor) -> Array:
    return Array(t.detach().cpu().numpy())


def receipt_request(arm: str, server_round: int, patch: int, outcomes: list[Outcome], want_truth: bool) -> RecordDict:
    arrays = {}
    for i, outcome in enumerate(outcomes):
        rec = outcome.reconstruction
        arrays[f"rec-{i}"] = _array(rec.images)
        if rec.start is not None:
            arrays[f"start-{i}"] = _array(rec.start)
        if rec.labels is not None:
            arrays[f"labels-{i}"] = _array(rec.labels)
        if rec.patches is not None:
            arrays[f"patches-{i}"] = _array(rec.patches)
            arrays[f"positions-{i}"] = _array(rec.patch_positions)
    config = ConfigRecord({ARM_KEY: arm, "round": server_round, "patch": patch, "count": len(outcomes),
                           "truth": want_truth})
    return RecordDict({"recon": ArrayRecord(arrays), "config": config})


@dataclass
class Attacked:
    """One reply the server attacked, with its outcomes and (later) the client's receipt."""

    reply: Reply
    outcomes: list[Outcome]
    receipt: Receipt | None = None

    @property
    def reconstructed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "attacked"]


class RoundAuditor:
    """The arm's adversary and audit trail; it never sees client data."""

    def __init__(self, arm: Arm, grid: Grid, store: AuditStore, patch: int) -> None:
        self.arm = arm
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
            weights = self.adversary.plant(content["arrays"].to_torch_state_dict())
        except NotApplicable as exc:
            for partition_id in sorted(targets):
                self.store.append(AuditRecord(arm=self.arm.name, round=server_round, partition_id=partition_id,
                                              attack=server.kind, status="not-applicable", reason=str(exc)))
            return messages, {}
        planted_content = RecordDict({"arrays": ArrayRecord(weights), "config": content["config"]})
        out = [Message(content=planted_content, dst_node_id=m.metadata.dst_node_id,
                       message_type=m.metadata.message_type)
               if partition_of[m.metadata.dst_node_id] in targets else m for m in messages]
        return out, {p: weights for p in targets}

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
        if attacked:
            self._collect_receipts(server_round, attacked)
            for item in attacked:
                append_attack_records(self.store, self.arm.name, server_round, item.reply.partition_id,
                                      item.reply.num_examples, item.outcomes, item.receipt)
        self._record_faults(server_round, checked.faults, set(planted))

    def _attack(self, weights: dict[str, torch.Tensor], reply: Reply, server_round: int) -> Attacked:
        obs = self.adversary.observation(weights, reply.tensors, reply.num_examples, server_round, reply.metrics)
        return Attacked(reply, self.adversary.run(obs))

    def _attack_planted(self, weights: dict[str, torch.Tensor], reply: Reply, server_round: int) -> Attacked:
        obs = self.adversary.observation(weights, reply.tensors, reply.num_examples, server_round)
        return Attacked(reply, self.adversary.run_planted(obs))

    def _collect_receipts(self, server_round: int, attacked: list[Attacked]) -> None:
        """Every client with a reconstruction scores it; the questions go out together."""
        asking = [item for item in attacked if item.reconstructed]
        questions = [
            Message(content=receipt_request(self.arm.name, server_round, self.patch, item.reconstructed,
                                            self.arm.audit.store_ground_truth),
                    dst_node_id=item.reply.message.metadata.src_node_id, message_type=RECEIPT)
            for item in asking
        ]
        if not questions:
            return
        answers = send_and_receive(self.grid, questions, timeout=self.arm.audit.receipt_timeout)
        by_question = {a.metadata.reply_to_message_id: a for a in answers}
        for item, question in zip(asking, questions):
            item.receipt = read_receipt(by_question.get(question.metadata.message_id), len(item.reconstructed))

    def _record_guards(self, server_round: int, checked: CheckedReplies) -> None:
        """What each client's guard measured and allowed out (it reports it in its metrics, or in the reason
        of the error reply that withheld its update), with the attack that really judged."""
        if not self.arm.guard.enabled:
            return
        for reply in checked.usable:
            if "guard.action" in reply.metrics:
                self.store.append(guard_record(self.arm, server_round, reply.partition_id, reply.num_examples,
                                               reply.metrics))
        for partition_id, reason in checked.faults:
            if WITHHELD in reason:
                self.store.append(withheld_record(self.arm, server_round, partition_id, reason))

    def _record_faults(self, server_round: int, faults: list[Fault], planted: set[int]) -> None:
        """One record per fault; ``info.planted`` on those the server sent planted weights (so a client's
        refusal reads as a planted model caught or an honest one refused)."""
        for partition_id, reason in faults:
            self.store.append(AuditRecord(arm=self.arm.name, round=server_round, partition_id=partition_id,
                                          attack="none", status="fault", source="fault", reason=reason,
                                          info={"planted": partition_id in planted}))


def read_receipt(answer: Message | None, count: int) -> Receipt:
    """A client's receipt for ``count`` reconstructions, or why there is none."""
    if answer is None:
        return Receipt({}, error="receipt: no reply")
    if answer.has_error():
        return Receipt({}, error=f"receipt: {answer.error.reason}")
    content = answer.content
    if "error" in content["config"]:
        return Receipt({}, error=f"receipt: {content['config']['error']}")
    truth = torch.from_numpy(np.asarray(content["truth"]["images"].numpy())) if "truth" in content else None
    shuffled = [bool(s) for s in content["config"]["shuffled"]]
    return Receipt(decode_scores(dict(content["metrics"]), count), truth, shuffled)
