"""SecAgg+ on the client: Flower's own ``secaggplus_mod``, fitted to fedmjp's reply layout.

Flower's mod answers the protocol's key-exchange stages itself and, in the stage that collects the masked
vectors, calls the rest of the ClientApp and reads the reply in the legacy fit layout
(``compat.recorddict_to_fitres``). The training message it passes on is the round's own (the server's
workflow sends the arm's weights and config, see ``server/secure_aggregation.py``); only the reply is
converted: its tensors in name order (the server reads the aggregate back in the same order), its example
count and metrics where the legacy layout keeps them. An error reply (a refused model, a withheld update,
a failing client) goes back as it is: the client drops out of the round, which the protocol tolerates
down to its reconstruction threshold.
"""

from __future__ import annotations

import flwr.compat.common.recorddict_compat as compat
import numpy as np
from flwr.app import Context, Message, RecordDict
from flwr.client.mod import secaggplus_mod
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_STATE

from fedmjp.federation.secure_aggregation import reply_precision
from fedmjp.federation.workload import derive_seed
from fedmjp.protocol import ARRAYS, CONFIG, METRICS, NUM_EXAMPLES, SERVER_ROUND
from fedmjp.scenario import SecureAggregation

from .context import arm_of, partition_of


class _Withdrawn(Exception):
    """Carries an error reply of the ClientApp out of Flower's mod, which can only read a fit result."""

    def __init__(self, reply: Message) -> None:
        super().__init__("the client sent an error reply")
        self.reply = reply


def received_settings(context: Context) -> SecureAggregation:
    """The settings the server sent this round (Flower's mod keeps them in the node's state): a planting server
    may set its own."""
    state = context.state.config_records[RECORD_KEY_STATE]
    return SecureAggregation(enabled=True, clipping_range=float(state["clipping_range"]),
                             quantization_range=int(state["target_range"]), modulus_range=int(state["mod_range"]),
                             max_weight=float(state["max_weight"]))


def as_fit_result(reply: Message, settings: SecureAggregation) -> RecordDict:
    """The reply in the legacy fit layout Flower's mod reads: tensors in name order, count and metrics, with
    how precisely the settings will carry it (the server warns when they clip it or quantize it coarsely)."""
    record = reply.content[ARRAYS]
    arrays = [record[name].numpy() for name in sorted(record)]
    metrics = dict(reply.content[METRICS])
    num_examples = int(metrics[NUM_EXAMPLES])
    metrics.update(reply_precision(settings, arrays, num_examples))
    fitres = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(arrays), num_examples, metrics)
    return compat.fitres_to_recorddict(fitres, keep_input=False)


def secure_aggregation_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Run the SecAgg+ stage ``msg`` asks for with Flower's ``secaggplus_mod``."""
    saved = np.random.get_state()

    def train(message: Message, ctxt: Context) -> Message:
        reply = call_next(message, ctxt)
        if reply.has_error():
            raise _Withdrawn(reply)
        arm = arm_of(message, ctxt)
        # Flower's stochastic rounding, next, draws from NumPy's global generator: seed it, so runs repeat.
        np.random.seed(derive_seed(arm.seed, "secure-aggregation", int(message.content[CONFIG][SERVER_ROUND]),
                                   partition_of(ctxt)) % 2**32)
        return Message(as_fit_result(reply, received_settings(ctxt)), reply_to=message)

    try:
        return secaggplus_mod(msg, context, train)
    except _Withdrawn as withdrawn:
        return withdrawn.reply
    finally:
        np.random.set_state(saved)
