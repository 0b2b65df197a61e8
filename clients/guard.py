"""guard_mod: the client-side guard as a Flower client mod (on when the scenario enables it)."""

from __future__ import annotations

from flwr.app import ArrayRecord, Context, Error, Message, MessageType
from flwr.clientapp.typing import ClientAppCallable

from fedmjp.audit.guard import add_noise, inspect
from fedmjp.audit.store import GUARD_ACTIONS
from fedmjp.train import LocalSettings
from fedmjp.workload import dataset, derive_seed, stack

from .context import arm_of, partition_of, round_batch

GUARD_WITHHELD = 7001  # error code of a withheld update


def guard_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    reply = call_next(msg, context)
    if msg.metadata.message_type != MessageType.TRAIN or reply.has_error():
        return reply
    arm = arm_of(msg, context)
    if not arm.guard.enabled:
        return reply
    server_round = int(msg.content["config"]["server-round"])
    indices, shuffled, _ = round_batch(context, arm, server_round)
    truth, labels = stack(dataset(arm, "train"), indices)
    weights = msg.content["arrays"].to_torch_state_dict()
    tensors = reply.content["arrays"].to_torch_state_dict()
    patch = int(weights["patch_embed.proj.weight"].shape[-1])
    metrics = reply.content["metrics"]
    verdict = inspect(arm, weights, tensors, truth, labels, shuffled, patch, server_round,
                      LocalSettings.from_metrics(metrics))
    if verdict.action == "withhold":
        reason = f"withheld by client guard: {arm.guard.attack.name} PSNR {verdict.psnr:.1f} dB > {arm.guard.max_psnr}"
        return Message(Error(code=GUARD_WITHHELD, reason=reason), reply_to=msg)
    if verdict.action == "noise":
        seed = derive_seed(arm.seed, "guard", server_round, partition_of(context))
        reply.content["arrays"] = ArrayRecord(add_noise(tensors, arm.guard.noise_scale, seed))
    metrics["guard.action"] = GUARD_ACTIONS.index(verdict.action)
    metrics["guard.seconds"] = verdict.seconds
    if verdict.psnr is not None:
        metrics["guard.psnr"] = verdict.psnr
    return reply
