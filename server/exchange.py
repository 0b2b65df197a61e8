"""One exchange of messages with the nodes, polled at a short interval.

Flower 1.42's ``Grid.send_and_receive`` sleeps 3 s between pulls in deployment (hard-coded in
its deployment grid, flwr/superlink/grid/http_grid.py), so every exchange there cost up to 3 s of waiting after the last reply had
arrived. The grid's public ``push_messages`` / ``pull_messages`` let the ServerApp poll at its
own pace; a pull is one local call to the SuperLink (in simulation, a lookup in memory).
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from flwr.app import Message
from flwr.serverapp import Grid

# Seconds between pulls: short against a ClientApp's work (a second or more), long enough that
# polling costs the SuperLink nothing noticeable.
INTERVAL = 0.05


def send_and_receive(grid: Grid, messages: Iterable[Message], timeout: float | None,
                     interval: float = INTERVAL) -> list[Message]:
    """Push ``messages`` in one batch and pull their replies until all came or ``timeout`` seconds
    passed (None: wait for all). Returns the replies that came, in arrival order; a message
    without a reply is missing from it, as with ``Grid.send_and_receive``."""
    waiting = set(grid.push_messages(messages))
    deadline = None if timeout is None else time.monotonic() + timeout
    replies: list[Message] = []
    while waiting:
        pulled = list(grid.pull_messages(waiting))
        replies += pulled
        waiting -= {reply.metadata.reply_to_message_id for reply in pulled}
        if not waiting or (deadline is not None and time.monotonic() >= deadline):
            break
        time.sleep(interval)
    return replies
