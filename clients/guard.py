"""guard_mod: the client-side guard as a Flower client mod (on when the scenario enables it)."""

from __future__ import annotations

from flwr.app import ArrayRecord, Context, Error, Message, MessageType
from flwr.clientapp.typing import ClientAppCallable

from fedmjp.audit.guard import add_noise, inspect, verdict_metrics, withheld_reason
from fedmjp.federation.train import LocalSettings
from fedmjp.federation.workload import dataset, derive_seed, stack

from .context import arm_of, partition_of, round_batch

GUARD_WITHHELD = 7001  # error code of a withheld update (judged too leaky, or unjudged)


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
        return Message(Error(code=GUARD_WITHHELD, reason=withheld_reason(verdict, arm.guard)), reply_to=msg)
    if verdict.action == "noise":
        seed = derive_seed(arm.seed, "guard", server_round, partition_of(context))
        reply.content["arrays"] = ArrayRecord(add_noise(tensors, arm.guard.noise_scale, seed))
    metrics.update(verdict_metrics(verdict))
    return reply
