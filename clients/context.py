"""Reading the run config and node config, and keeping per-round state for receipts.

Imports nothing heavy at module level (a partition query must not pay for torch): the wire's keys and
codes come from ``fedmjp.protocol`` (light), and what reads arms or arrays imports the rest when called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message
from flwr.clientapp.typing import ClientAppCallable

from fedmjp.protocol import ARM, CONFIG, PARTITION_ID, ErrorCode, error

if TYPE_CHECKING:
    import numpy as np
    import torch

    from fedmjp.scenario import Arm
    from fedmjp.federation.workload import ClientRound

# The context.state record that keeps the partition the server assigned (simulation, see
# server/partitions.py) for the run.
ASSIGNED = "assigned-partition"


def arm_key(msg: Message) -> str | None:
    """The key by which the server's message names its arm in the run (None: the run's only arm)."""
    config = msg.content[CONFIG] if CONFIG in msg.content else {}
    return str(config[ARM]) if ARM in config else None


def arm_of(msg: Message, context: Context) -> Arm:
    """The arm the server's message is about (one run may carry several, one after the other)."""
    from fedmjp.federation.runconfig import arm_named

    return arm_named(context.run_config, arm_key(msg))


def partition_of(context: Context) -> int:
    """The partition this node holds: the one the server assigned it (simulation), else its node
    config's (a deployed SuperNode's ``--node-config partition-id=K``)."""
    if ASSIGNED in context.state:
        return int(context.state[ASSIGNED][PARTITION_ID])
    return int(context.node_config[PARTITION_ID])


def partition_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Keep the partition a message assigns (config ``partition-id``) for the run; a node holds
    one partition, so a different one later is refused with an error reply."""
    config = msg.content[CONFIG] if msg.has_content() and CONFIG in msg.content else {}
    if PARTITION_ID in config:
        wanted = int(config[PARTITION_ID])
        if ASSIGNED not in context.state:
            context.state[ASSIGNED] = ConfigRecord({PARTITION_ID: wanted})
        elif (held := partition_of(context)) != wanted:
            return Message(error(ErrorCode.WRONG_PARTITION, f"this node holds partition {held}, not {wanted}"),
                           reply_to=msg)
    return call_next(msg, context)


def remember_round(context: Context, msg: Message, server_round: int, work: ClientRound) -> None:
    """Keep what a leakage receipt needs for the arm ``msg`` names: indices and masks, small (never images)."""
    import numpy as np

    arrays = {f"batch-{i}": np.asarray(b, dtype=np.int64) for i, b in enumerate(work.batches)}
    for i, jigsaw in enumerate(work.result.jigsaws):
        if jigsaw is not None:
            arrays[f"mask-{i}"] = jigsaw.mask.numpy().astype(np.uint8)
    context.state["round-arrays"] = ArrayRecord({k: Array(v) for k, v in arrays.items()})
    context.state["round-info"] = ConfigRecord(
        {"arm": str(arm_key(msg)), "round": server_round, "steps": len(work.batches),
         "shuffled": [j is not None for j in work.result.jigsaws]}
    )


def round_batch(context: Context, msg: Message, server_round: int
                ) -> tuple[np.ndarray, torch.Tensor | None, list[bool]] | None:
    """(indices of every example used, the shuffle mask of a one-step round, shuffled steps),
    or None when this node kept no state for the arm ``msg`` names and that round."""
    import torch

    from fedmjp.audit.receipt import round_examples

    info = context.state["round-info"] if "round-info" in context.state else None
    if info is None or str(info["arm"]) != str(arm_key(msg)) or int(info["round"]) != server_round:
        return None
    arrays = {k: v.numpy() for k, v in context.state["round-arrays"].items()}
    steps = [bool(s) for s in context.state["round-info"]["shuffled"]]
    batches = [arrays[f"batch-{i}"] for i in range(len(steps))]
    masks = [torch.from_numpy(arrays[f"mask-{i}"]).bool() if f"mask-{i}" in arrays else None
             for i in range(len(steps))]
    return (*round_examples(batches, masks), steps)
