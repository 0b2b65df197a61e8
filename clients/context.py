"""Reading the run config and node config, and keeping per-round state for receipts."""

from __future__ import annotations

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message

from fedmjp.runconfig import ARM_KEY, arm_named
from fedmjp.scenario import Arm
from fedmjp.workload import ClientRound


def arm_of(msg: Message, context: Context) -> Arm:
    """The arm the server's message is about (one run may carry several, one after the other)."""
    config = msg.content["config"] if "config" in msg.content else {}
    return arm_named(context.run_config, str(config[ARM_KEY]) if ARM_KEY in config else None)


def partition_of(context: Context) -> int:
    return int(context.node_config["partition-id"])


def remember_round(context: Context, arm: Arm, server_round: int, work: ClientRound) -> None:
    """Keep what a leakage receipt needs: indices and masks, small (never images)."""
    arrays = {f"batch-{i}": np.asarray(b, dtype=np.int64) for i, b in enumerate(work.batches)}
    for i, jigsaw in enumerate(work.result.jigsaws):
        if jigsaw is not None:
            arrays[f"mask-{i}"] = jigsaw.mask.numpy().astype(np.uint8)
    context.state["round-arrays"] = ArrayRecord({k: Array(v) for k, v in arrays.items()})
    context.state["round-info"] = ConfigRecord(
        {"arm": arm.name, "round": server_round, "steps": len(work.batches),
         "shuffled": [j is not None for j in work.result.jigsaws]}
    )


def round_batch(context: Context, arm: Arm, server_round: int
                ) -> tuple[np.ndarray, torch.Tensor | None, list[bool]] | None:
    """(indices of every example used, the shuffle mask of a one-step round, shuffled steps),
    or None when this node kept no state for that arm and round."""
    info = context.state["round-info"] if "round-info" in context.state else None
    if info is None or str(info["arm"]) != arm.name or int(info["round"]) != server_round:
        return None
    arrays = {k: v.numpy() for k, v in context.state["round-arrays"].items()}
    steps = [bool(s) for s in context.state["round-info"]["shuffled"]]
    batches = [arrays[f"batch-{i}"] for i in range(len(steps))]
    # Attacks reconstruct the examples of the round; a mask is only meaningful for one step.
    if len(steps) == 1:
        mask = torch.from_numpy(arrays["mask-0"]).bool() if "mask-0" in arrays else None
        return batches[0], mask, steps  # batch order: per-sample masks follow it
    return np.unique(np.concatenate(batches)), None, steps
