"""Client-side defences as Flower client mods, switched on per scenario (``defence:`` of the arm).

- ``prune_mod``: zero the smallest-magnitude fraction of every tensor of the reply.
- ``local_dp_mod``: Flower's own ``LocalDpMod`` (clip the reply to an L2 norm, add Gaussian noise),
  built from the arm's ``defence.dp``. Flower's mod works on new weights (it clips reply - sent and
  requires the reply's keys to equal the sent ones); fedmjp replies carry gradients or updates, so
  this wrapper hands it the weights the reply stands for and converts its output back. The server
  receives a clipped, noised gradient (or update) in the usual format.

In ``ClientApp(mods=[guard_mod, local_dp_mod, prune_mod])`` the reply passes prune, then DP, then
the guard (the first mod is the outermost).
"""

from __future__ import annotations

import numpy as np
from flwr.app import ArrayRecord, Context, Message, MessageType
from flwr.clientapp.mod import LocalDpMod
from flwr.clientapp.typing import ClientAppCallable

from fedmjp.defences.reply import from_weights, prune, to_weights
from fedmjp.federation.train import reply_kind
from fedmjp.federation.workload import derive_seed
from fedmjp.protocol import ARRAYS, CONFIG, DP_NOISE_STD, METRICS, PRUNED, SERVER_ROUND

from .context import arm_of, partition_of


def _is_train_reply(msg: Message, reply: Message) -> bool:
    return msg.metadata.message_type == MessageType.TRAIN and not reply.has_error()


def prune_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    reply = call_next(msg, context)
    if not _is_train_reply(msg, reply):
        return reply
    fraction = arm_of(msg, context).defence.prune
    if fraction <= 0:
        return reply
    reply.content[ARRAYS] = ArrayRecord(prune(reply.content[ARRAYS].to_torch_state_dict(), fraction))
    reply.content[METRICS][PRUNED] = fraction
    return reply


def local_dp_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    if msg.metadata.message_type != MessageType.TRAIN:
        return call_next(msg, context)
    arm = arm_of(msg, context)
    dp = arm.defence.dp
    if dp is None:
        return call_next(msg, context)
    kind = reply_kind(arm.training.mode)
    sent = msg.content[ARRAYS].to_torch_state_dict()
    names: list[str] = []
    seed = derive_seed(arm.seed, "local-dp", int(msg.content[CONFIG][SERVER_ROUND]), partition_of(context))
    saved = np.random.get_state()

    def reply_as_weights(message: Message, ctxt: Context) -> Message:
        reply = call_next(message, ctxt)
        if reply.has_error():
            return reply
        tensors = reply.content[ARRAYS].to_torch_state_dict()
        names.extend(tensors)
        reply.content[ARRAYS] = ArrayRecord(to_weights(sent, tensors, kind))
        # Flower's mod draws its noise from NumPy's global generator: seed it, so runs repeat.
        np.random.seed(seed % 2**32)
        return reply

    try:
        reply = LocalDpMod(dp.clipping_norm, dp.sensitivity or dp.clipping_norm, dp.epsilon, dp.delta)(
            msg, context, reply_as_weights)
    finally:
        np.random.set_state(saved)
    if reply.has_error():
        return reply
    tensors = from_weights(sent, reply.content[ARRAYS].to_torch_state_dict(), kind, names)
    reply.content[ARRAYS] = ArrayRecord(tensors)
    reply.content[METRICS][DP_NOISE_STD] = dp.noise_std
    return reply

