"""guard_mod: the client-side guard as a Flower client mod (on when the scenario enables it)."""

from __future__ import annotations

from flwr.app import ArrayRecord, Context, Message, MessageType
from flwr.clientapp.typing import ClientAppCallable

from fedmjp.audit.guard import add_noise, inspect, withheld_reply
from fedmjp.federation.workload import dataset, derive_seed, stack
from fedmjp.protocol import ARRAYS, CONFIG, METRICS, SERVER_ROUND, LocalSettings

from .context import arm_of, partition_of, round_batch


def guard_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    reply = call_next(msg, context)
    if msg.metadata.message_type != MessageType.TRAIN or reply.has_error():
        return reply
    arm = arm_of(msg, context)
    if not arm.guard.enabled:
        return reply
    server_round = int(msg.content[CONFIG][SERVER_ROUND])
    indices, shuffled, _ = round_batch(context, msg, server_round)
    truth, labels = stack(dataset(arm, "train"), indices)
    weights = msg.content[ARRAYS].to_torch_state_dict()
    tensors = reply.content[ARRAYS].to_torch_state_dict()
    patch = int(weights["patch_embed.proj.weight"].shape[-1])
    metrics = reply.content[METRICS]
    verdict = inspect(arm, weights, tensors, truth, labels, shuffled, patch, server_round,
                      LocalSettings.from_metrics(metrics))
    if verdict.action == "withhold":
        return Message(withheld_reply(verdict, arm.guard), reply_to=msg)
    if verdict.action == "noise":
        seed = derive_seed(arm.seed, "guard", server_round, partition_of(context))
        reply.content[ARRAYS] = ArrayRecord(add_noise(tensors, arm.guard.noise_scale, seed))
    metrics.update(verdict.report.to_metrics())
    return reply
