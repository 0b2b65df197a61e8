"""Which node holds which partition: assigned by the server in simulation (no message per node),
kept by the node for the run, the node's own config in deployment; and a ClientApp whose import
leaves torch for the messages that need it."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict

from clients.app import app
from flwr.supercore.task_identity import TaskIdentity

from fedmjp.protocol import ErrorCode
from server.partitions import Partitions, registered_nodes, too_few

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def app_process_identity():
    """Messages read the run and node of the process they are made in: set as Flower's app
    processes set them, and put back."""
    saved = TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1
    yield
    TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved


def node_context(partition_id: int = 3) -> Context:
    return Context(run_id=1, node_id=42, node_config={"partition-id": partition_id, "num-partitions": 8},
                   state=RecordDict(), run_config={})


def partition_query(assigned: int | None = None) -> Message:
    config = ConfigRecord({} if assigned is None else {"partition-id": assigned})
    message = Message(content=RecordDict({"config": config}), dst_node_id=42, message_type="query.partition")
    message.metadata.__dict__["_message_id"] = "m1"  # as Flower sets it when it pushes the message
    return message


def answered_partition(reply: Message) -> int:
    assert not reply.has_error(), reply.error.reason
    return int(reply.content["config"]["partition-id"])


def test_a_deployed_node_answers_its_node_config_partition() -> None:
    assert answered_partition(app(partition_query(), node_context(partition_id=3))) == 3


def test_a_simulated_node_keeps_the_partition_the_server_assigned_for_the_run() -> None:
    context = node_context(partition_id=3)  # Flower's own index of the simulated node
    assert answered_partition(app(partition_query(assigned=5), context)) == 5
    assert answered_partition(app(partition_query(), context)) == 5  # later messages (receipts) name none


def test_a_node_refuses_a_second_different_partition() -> None:
    context = node_context()
    app(partition_query(assigned=5), context)
    reply = app(partition_query(assigned=6), context)
    assert reply.has_error() and reply.error.code == ErrorCode.WRONG_PARTITION and "holds partition 5" in reply.error.reason


def test_assigned_messages_name_their_partition_and_share_the_arrays() -> None:
    arrays = ArrayRecord({"w": Array(np.zeros(3, dtype=np.float32))})
    shared = RecordDict({"arrays": arrays, "config": ConfigRecord({"arm": "vit", "server-round": 1})})
    messages = [Message(content=shared, dst_node_id=node, message_type="train") for node in (70, 11)]
    addressed = Partitions({0: 11, 1: 70}, assigned=True).address(messages)
    assert [int(m.content["config"]["partition-id"]) for m in addressed] == [1, 0]
    assert all(m.content["config"]["arm"] == "vit" and m.content["arrays"] is arrays for m in addressed)
    assert "partition-id" not in shared["config"]  # the strategy's record is not changed


def test_discovered_partitions_leave_messages_as_they_are() -> None:
    message = Message(content=RecordDict({"config": ConfigRecord({"arm": "vit"})}), dst_node_id=7, message_type="train")
    Partitions({0: 7}, assigned=False).address([message])
    assert "partition-id" not in message.content["config"]


def test_an_arm_with_fewer_clients_uses_the_nodes_of_its_own_partitions() -> None:
    """A run simulates as many SuperNodes as its largest arm needs; an arm of N clients gets partitions 0..N-1,
    on the same nodes as the larger arm's (a node keeps its partition for the whole run)."""
    largest = Partitions({0: 11, 1: 12, 2: 13}, assigned=True)
    smaller = largest.first(2)
    assert smaller.nodes == {0: 11, 1: 12} and smaller.assigned and largest.nodes == {0: 11, 1: 12, 2: 13}


class RegisteringGrid:
    """Node ids as Flower's simulation engine registers them: in batches, from a thread of its own, while the
    ServerApp has already started (at 10,000 nodes a run failed now and then, seeing only part of them)."""

    def __init__(self, total: int, batch: int, pause: float) -> None:
        self.nodes: set[int] = set()
        self.thread = threading.Thread(target=self._register, args=(total, batch, pause))
        self.thread.start()

    def _register(self, total: int, batch: int, pause: float) -> None:
        for start in range(0, total, batch):
            time.sleep(pause)
            self.nodes = self.nodes | set(range(1000 + start, 1000 + min(start + batch, total)))

    def get_node_ids(self) -> set[int]:
        return set(self.nodes)


def test_the_server_waits_for_the_simulated_nodes_it_needs_while_flower_registers_them() -> None:
    grid = RegisteringGrid(total=5000, batch=500, pause=0.05)
    nodes = registered_nodes(grid, 5000, settled=2.0, interval=0.01)  # type: ignore[arg-type]
    grid.thread.join()
    assert nodes == list(range(1000, 6000))


def test_a_simulated_federation_smaller_than_the_scenario_is_seen_once_its_count_stops_growing() -> None:
    grid = RegisteringGrid(total=3, batch=1, pause=0.05)
    started = time.monotonic()
    nodes = registered_nodes(grid, 5, settled=0.5, interval=0.01)  # type: ignore[arg-type]
    assert nodes == [1000, 1001, 1002]
    assert time.monotonic() - started < 3.0  # the settle time after the last node, not a long timeout


def test_too_few_nodes_is_one_line_with_the_command_that_fixes_it() -> None:
    message = str(too_few(4, 2))
    assert "\n" not in message and "needs 4 SuperNodes" in message and "has 2" in message
    assert '--federation-config "num-supernodes=4"' in message


def test_loading_the_clientapp_imports_nothing_heavy_of_fedmjp_or_its_dependencies() -> None:
    # Every deployed message starts a fresh ClientApp process: a partition query pays only Flower and the
    # protocol's keys.
    code = ("import sys, clients.app; heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'timm', 'scipy', 'torchmetrics') or m.startswith('fedmjp') and m not in "
            "('fedmjp', 'fedmjp.protocol', 'fedmjp.errors')); print(heavy)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
