"""Which node holds which partition, at a cost that does not grow with the population.

Node ids are random per run, so the server cannot know a node's partition in advance:

- **Simulation** (Flower's in-memory grid): the simulated nodes are interchangeable (each
  loads its partition from the same data), so the server *assigns* partition ``p`` to the
  ``p``-th node in sorted node-id order and names it in every message it sends there (config
  ``partition-id``); the ClientApp keeps the first partition it is given for the whole run
  (``clients.context.partition_mod``). No message is needed before the first round. Asking all
  10,000 nodes instead took about 230 s: Flower's simulation engine scans every queued message
  for every node on each of its sweeps, a cost quadratic in the messages in flight.
  Flower starts the ServerApp's thread before its engine registers the nodes (10,000 take
  seconds), so the server waits until the nodes it needs are there, or their count stopped growing.
- **Deployment**: a SuperNode's partition is its own (``--node-config partition-id=K``, its
  data). The server asks every node once, in one batched exchange polled at a short interval.

Runs repeat for a seed either way: the strategy samples partition ids, never node ids.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid
from flwr.superlink.grid import InMemoryGrid

from fedmjp.protocol import CONFIG, PARTITION_ID, PARTITION_MESSAGE

from .exchange import send_and_receive

# A deployment's SuperNodes may still be connecting when the run starts (``fedmjp deploy`` waits
# for them before it starts the run; a plain ``flwr run`` does not).
DEPLOYMENT_NODES_TIMEOUT = 60.0
# Seconds without a new node after which a simulated federation counts as fully registered: Flower registers
# its nodes in one loop (10,000 in about 3 s), so a pause this long means it is done.
REGISTRATION_SETTLED = 3.0


class TooFewNodes(RuntimeError):
    """The federation has fewer nodes than the scenario has clients."""


def too_few(needed: int, found: int) -> TooFewNodes:
    return TooFewNodes(
        f"this scenario needs {needed} SuperNodes (clients.num_clients) and the federation has {found}: "
        f'run `flwr run . --federation-config "num-supernodes={needed}"` (simulation) or start {needed} '
        f"SuperNodes with partition-id=0..{needed - 1} (deployment)"
    )


class Partitions:
    """Partition id -> node id for one run, and how the messages of a round name the partition."""

    def __init__(self, nodes: dict[int, int], assigned: bool) -> None:
        self.nodes = nodes
        self.assigned = assigned

    def first(self, count: int) -> Partitions:
        """Partitions 0..count-1 and their nodes (an arm with fewer clients than the run's largest)."""
        return Partitions({p: node for p, node in self.nodes.items() if p < count}, self.assigned)

    def address(self, messages: Iterable[Message]) -> list[Message]:
        """With assigned partitions, name each message's partition in its config (a config
        record of its own; the arrays stay shared). Deployed nodes know their own."""
        messages = list(messages)
        if not self.assigned:
            return messages
        partition_of = {node: partition for partition, node in self.nodes.items()}
        for message in messages:
            content = RecordDict(dict(message.content))
            config = dict(content[CONFIG]) if CONFIG in content else {}
            content[CONFIG] = ConfigRecord({**config, PARTITION_ID: partition_of[message.metadata.dst_node_id]})
            message.content = content
        return messages


def find_partitions(grid: Grid, needed: int, timeout: float = DEPLOYMENT_NODES_TIMEOUT) -> Partitions:
    """The nodes of partitions 0..needed-1 (see the module's docstring); raises TooFewNodes with
    one line saying what to start when the federation is smaller than the scenario."""
    if isinstance(grid, InMemoryGrid):
        nodes = registered_nodes(grid, needed)
        if len(nodes) < needed:
            raise too_few(needed, len(nodes))
        return Partitions({partition: nodes[partition] for partition in range(needed)}, assigned=True)
    return Partitions(ask_nodes(grid, needed, timeout), assigned=False)


def registered_nodes(grid: Grid, needed: int, settled: float = REGISTRATION_SETTLED,
                     interval: float = 0.05) -> list[int]:
    """Simulation: the node ids once ``needed`` are registered, or once none was added for ``settled``
    seconds (the federation is smaller than the scenario); sorted."""
    nodes = grid.get_node_ids()
    changed = time.monotonic()
    while len(nodes) < needed and time.monotonic() - changed < settled:
        time.sleep(interval)
        if len(now := grid.get_node_ids()) != len(nodes):
            nodes, changed = now, time.monotonic()
    return sorted(nodes)


def ask_nodes(grid: Grid, needed: int, timeout: float) -> dict[int, int]:
    """Deployment: wait for ``needed`` nodes, then ask them all their partition id at once."""
    deadline = time.monotonic() + timeout
    while len(nodes := sorted(grid.get_node_ids())) < needed:
        if time.monotonic() > deadline:
            raise too_few(needed, len(nodes))
        time.sleep(0.5)
    questions = [Message(content=RecordDict(), dst_node_id=n, message_type=PARTITION_MESSAGE) for n in nodes]
    mapping: dict[int, int] = {}
    for reply in send_and_receive(grid, questions, timeout=timeout):
        if not reply.has_error():
            mapping[int(reply.content[CONFIG][PARTITION_ID])] = reply.metadata.src_node_id
    if missing := sorted(set(range(needed)) - set(mapping)):
        raise RuntimeError(f"no online node reported partition ids {missing[:10]} (of 0..{needed - 1})")
    return mapping
