"""The adversary tap: attacks every selected reply before aggregation, then asks the client
that sent it for a leakage receipt (numbers only) and appends audit records."""

from __future__ import annotations

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from fedmjp.audit import AuditRecord, AuditStore
from fedmjp.audit.adversary import Adversary, Outcome
from fedmjp.audit.guard import ACTIONS
from fedmjp.audit.receipt import decode_scores
from fedmjp.runconfig import ARM_KEY
from fedmjp.scenario import Arm

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
    config = ConfigRecord({ARM_KEY: arm, "round": server_round, "patch": patch, "count": len(outcomes),
                           "truth": want_truth})
    return RecordDict({"recon": ArrayRecord(arrays), "config": config})


class AdversaryTap:
    """A FedMJP reply tap; one per arm. It never sees client data."""

    def __init__(self, arm: Arm, grid: Grid, store: AuditStore, patch: int) -> None:
        self.arm = arm
        self.grid = grid
        self.store = store
        self.patch = patch
        self.adversary = Adversary(arm)

    def __call__(self, server_round: int, sent: ArrayRecord, replies: list[Message],
                 failed: list[tuple[int, str]]) -> None:
        self._record_guards(server_round, replies, failed)
        audit = self.arm.audit
        if not audit.attacks or not audit.attacks_round(server_round):
            return
        by_partition = {int(r.content["metrics"]["partition-id"]): r for r in replies}
        weights = sent.to_torch_state_dict()
        for partition_id in audit.targets(list(by_partition)):
            self._audit_reply(server_round, partition_id, weights, by_partition[partition_id])

    def _record_guards(self, server_round: int, replies: list[Message], failed: list[tuple[int, str]]) -> None:
        """What each client's guard measured and allowed out (it reports it in its metrics)."""
        if not self.arm.guard.enabled:
            return
        name = self.arm.guard.attack.name
        for reply in replies:
            metrics = reply.content["metrics"]
            if "guard.action" not in metrics:
                continue
            action = ACTIONS[int(metrics["guard.action"])]
            psnr = {"psnr": float(metrics["guard.psnr"])} if "guard.psnr" in metrics else {}
            self.store.append(AuditRecord(
                arm=self.arm.name, round=server_round, partition_id=int(metrics["partition-id"]), attack=name,
                status="scored" if psnr else "not-applicable", source="client-guard", metrics=psnr,
                seconds=float(metrics["guard.seconds"]), reason=action, num_examples=int(metrics["num-examples"]),
            ))
        for partition_id, reason in failed:
            if "client guard" in reason:
                self.store.append(AuditRecord(
                    arm=self.arm.name, round=server_round, partition_id=partition_id, attack=name,
                    status="withheld", source="client-guard", reason=reason,
                ))

    def _audit_reply(self, server_round: int, partition_id: int, weights: dict, reply: Message) -> None:
        num_examples = int(reply.content["metrics"]["num-examples"])
        obs = self.adversary.observation(weights, reply.content["arrays"].to_torch_state_dict(), num_examples)
        outcomes = self.adversary.run(obs)
        attacked = [o for o in outcomes if o.status == "attacked"]
        receipts, truth, info, error = self._receipts(server_round, reply.metadata.src_node_id, attacked)
        truth_image = None
        if truth is not None:
            truth_image = self.store.save_images(self.arm.name, f"r{server_round:03d}-p{partition_id}-truth", truth)
        for outcome in outcomes:
            record = AuditRecord(
                arm=self.arm.name, round=server_round, partition_id=partition_id, attack=outcome.spec.name,
                status=outcome.status, num_examples=num_examples, reason=outcome.reason,
            )
            if outcome.status == "attacked":
                rec = outcome.reconstruction
                name = f"r{server_round:03d}-p{partition_id}-{outcome.spec.name}"
                record.image = self.store.save_images(self.arm.name, name, rec.images)
                record.truth_image = truth_image
                record.seconds = rec.seconds
                record.threat_model = rec.threat_model.to_dict()
                record.labels_recovered = [] if rec.labels is None else [int(v) for v in rec.labels]
                record.shuffled_steps = info
                scored = receipts.get(attacked.index(outcome))
                if scored is None:
                    record.status, record.reason = "receipt-failed", error
                else:
                    record.status = "scored"
                    record.metrics, record.baseline = scored
            self.store.append(record)

    def _receipts(self, server_round: int, node: int, attacked: list[Outcome]):
        """Ask the client to score the reconstructions; returns ({i: (metrics, baseline)}, truth, shuffled, error)."""
        if not attacked:
            return {}, None, [], ""
        content = receipt_request(self.arm.name, server_round, self.patch, attacked, self.arm.audit.store_ground_truth)
        question = Message(content=content, dst_node_id=node, message_type=RECEIPT)
        replies = list(self.grid.send_and_receive([question], timeout=600))
        if not replies or replies[0].has_error():
            reason = replies[0].error.reason if replies else "no reply"
            return {}, None, [], f"receipt: {reason}"
        answer = replies[0].content
        if "error" in answer["config"]:
            return {}, None, [], f"receipt: {answer['config']['error']}"
        scored = decode_scores(dict(answer["metrics"]), len(attacked))
        truth = answer["truth"]["images"].numpy() if "truth" in answer else None
        shuffled = [bool(s) for s in answer["config"]["shuffled"]]
        return scored, None if truth is None else torch.from_numpy(np.asarray(truth)), shuffled, ""
