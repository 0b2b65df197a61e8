"""model_check_mod: before training, the client checks the weights it received for planted structure.

On when the arm says ``guard.model_check: true``. A flagged model is refused: no training, an error reply
naming the test that fired (the server's round records it as a fault). Weights that pass become the
reference the next round's weights are compared against (norm jumps).
"""

from __future__ import annotations

from flwr.app import ArrayRecord, Context, Error, Message, MessageType
from flwr.clientapp.typing import ClientAppCallable

from fedmjp.model_check import REFUSAL, check_weights

from .context import arm_of

MODEL_REFUSED = 7002  # error code of a refused (planted-looking) model
_ACCEPTED = "model-check.accepted"  # context.state key: the global weights last trained on


def model_check_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    if msg.metadata.message_type != MessageType.TRAIN or not arm_of(msg, context).guard.model_check:
        return call_next(msg, context)
    weights = msg.content["arrays"].to_torch_state_dict()
    accepted = context.state[_ACCEPTED].to_torch_state_dict() if _ACCEPTED in context.state else None
    findings = check_weights(weights, accepted)
    if findings:
        reason = f"{REFUSAL}: {findings[0]}" + (
            f" (+{len(findings) - 1} more)" if len(findings) > 1 else "")
        return Message(Error(code=MODEL_REFUSED, reason=reason), reply_to=msg)
    context.state[_ACCEPTED] = ArrayRecord(weights)
    return call_next(msg, context)
