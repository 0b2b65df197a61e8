"""model_check_mod: before training, the client checks the weights it received for planted structure.

On when the arm says ``guard.model_check: true``. The check (``fedmjp.defences.model_check.check_model``, the code
``fedmjp check`` runs) looks at the weights, at what they do to the batch this client is about to train on,
and, after its first round, at the jump from the weights it last accepted. A flagged model is refused: no
training, an error reply naming the test that fired (the server's round records it as a fault). Weights that
pass become the reference the next round's weights are compared against.
"""

from __future__ import annotations

from flwr.app import ArrayRecord, Context, Message, MessageType
from flwr.clientapp.typing import ClientAppCallable

from fedmjp.defences.model_check import REFUSAL, check_model
from fedmjp.federation.workload import build_model, client_batches, dataset, stack
from fedmjp.protocol import ARRAYS, CONFIG, SERVER_ROUND, ErrorCode, error

from .context import arm_of, partition_of

_ACCEPTED = "model-check.accepted"  # context.state key: the global weights last trained on


def model_check_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    arm = arm_of(msg, context)
    if msg.metadata.message_type != MessageType.TRAIN or not arm.guard.model_check:
        return call_next(msg, context)
    weights = msg.content[ARRAYS].to_torch_state_dict()
    accepted = context.state[_ACCEPTED].to_torch_state_dict() if _ACCEPTED in context.state else None
    server_round = int(msg.content[CONFIG][SERVER_ROUND])
    # The first batch this client trains on this round: what the weights would do to it.
    images, _ = stack(dataset(arm, "train"), client_batches(arm, partition_of(context), server_round)[0])
    findings = check_model(build_model(arm), weights, accepted, images)
    if findings:
        reason = f"{REFUSAL}: {findings[0]}" + (
            f" (+{len(findings) - 1} more)" if len(findings) > 1 else "")
        return Message(error(ErrorCode.MODEL_REFUSED, reason), reply_to=msg)
    context.state[_ACCEPTED] = ArrayRecord(weights)
    return call_next(msg, context)
