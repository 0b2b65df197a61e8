"""SecAgg+ in the round: Flower's ``SecAggPlusWorkflow`` runs the training exchange of a round, and the server
gets the aggregate only.

The workflow speaks the legacy strategy API (it asks ``configure_fit`` whom to train and hands the unmasked
aggregate to ``aggregate_fit``). Three thin pieces fit it to the round without changing its protocol:

- ``_Handover``, a legacy strategy that names the round's sampled nodes and keeps what ``aggregate_fit`` gets;
- ``_RoundWorkflow``, the workflow sending the round's own training messages (the arm's weights and config,
  as the ClientApp reads them) in its masked-vector stage instead of legacy fit instructions;
- ``_WatchedGrid``, the round's grid polled at the round's pace (``exchange.send_and_receive``), noting which
  node dropped out in which stage, for the audit's faults.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.common import FitIns, FitRes, Parameters, parameters_to_ndarrays
from flwr.server.client_proxy import ClientProxy
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.strategy import Strategy
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.server.workflow.secure_aggregation.secaggplus_workflow import SecAggPlusWorkflow, WorkflowState
from flwr.serverapp import Grid

from fedmjp.audit.records import Fault
from fedmjp.federation.secure_aggregation import quantization_bound
from fedmjp.protocol import NUM_EXAMPLES
from fedmjp.scenario import SecureAggregation

from .exchange import send_and_receive
from .strategy import NO_REPLY, error_fault

STAGES = ("setup", "share keys", "collect masked vectors", "unmask")


@dataclass(frozen=True)
class Contributor:
    """A client whose masked reply is in the aggregate, with the metrics it sent in the clear."""

    partition_id: int
    node_id: int
    metrics: MetricRecord

    @property
    def num_examples(self) -> int:
        return int(self.metrics[NUM_EXAMPLES])


@dataclass
class SecureRound:
    """What the server learns from a SecAgg+ round: the example-weighted mean of the replies (None: the
    protocol halted, see ``halted``), who is in it, who dropped out and in which stage."""

    aggregate: dict[str, torch.Tensor] | None
    contributors: list[Contributor]
    faults: list[Fault]
    halted: str = ""
    bound: float = float("nan")  # the aggregate's largest error against the plain weighted mean

    @property
    def num_examples(self) -> int:
        return sum(c.num_examples for c in self.contributors)


class _Handover(Strategy):
    """The legacy strategy the workflow asks: the round's nodes, and the aggregate it hands back."""

    def __init__(self, proxies: list[ClientProxy]) -> None:
        self.proxies = proxies
        self.results: list[tuple[ClientProxy, FitRes]] | None = None

    def configure_fit(self, server_round, parameters, client_manager):  # type: ignore[no-untyped-def]
        # The instructions are placeholders: _RoundWorkflow sends the round's own messages.
        return [(proxy, FitIns(Parameters([], ""), {})) for proxy in self.proxies]

    def aggregate_fit(self, server_round, results, failures):  # type: ignore[no-untyped-def]
        self.results = list(results)
        return None, {}

    def initialize_parameters(self, client_manager):  # type: ignore[no-untyped-def]
        return None

    def configure_evaluate(self, server_round, parameters, client_manager):  # type: ignore[no-untyped-def]
        return []

    def aggregate_evaluate(self, server_round, results, failures):  # type: ignore[no-untyped-def]
        return None, {}

    def evaluate(self, server_round, parameters):  # type: ignore[no-untyped-def]
        return None


class _RoundWorkflow(SecAggPlusWorkflow):
    def __init__(self, contents: dict[int, RecordDict], settings: SecureAggregation, timeout: float) -> None:
        super().__init__(settings.num_shares, settings.reconstruction_threshold, max_weight=settings.max_weight,
                         clipping_range=settings.clipping_range, quantization_range=settings.quantization_range,
                         modulus_range=settings.modulus_range, timeout=timeout)
        self.contents = contents

    def setup_stage(self, grid: Grid, context: LegacyContext, state: WorkflowState) -> bool:  # type: ignore[override]
        going_on = super().setup_stage(grid, context, state)
        # Each node's own copy: the workflow adds its stage config to the content it sends.
        state.nid_to_fitins = {node: RecordDict(dict(self.contents[node].items())) for node in state.nid_to_fitins}
        return going_on


@dataclass
class _WatchedGrid:
    """The workflow's grid: each stage's exchange polled at the round's pace, its drop-outs noted."""

    grid: Grid
    timeout: float
    node_partitions: dict[int, int]
    faults: list[Fault] = field(default_factory=list)
    stages: list[str] = field(default_factory=list)  # those exchanged so far

    def send_and_receive(self, messages, timeout=None):  # type: ignore[no-untyped-def]
        """One stage's exchange (the workflow's ``timeout`` is the round's, set here): a node that answers
        with an error or not before the timeout drops out."""
        messages = list(messages)
        stage = STAGES[len(self.stages)]
        self.stages.append(stage)
        replies = send_and_receive(self.grid, messages, timeout=self.timeout)
        answered = {r.metadata.reply_to_message_id: r for r in replies}
        for message in messages:
            partition_id = self.node_partitions[message.metadata.dst_node_id]
            reply = answered.get(message.metadata.message_id)
            if reply is None:
                self.faults.append(Fault(partition_id, f"secure aggregation, {stage}: {NO_REPLY}"))
            elif reply.has_error():
                fault = error_fault(partition_id, reply)
                self.faults.append(replace(fault, reason=f"secure aggregation, {stage}: {fault.reason}"))
        return replies


def secure_round(grid: Grid, messages: list[Message], settings: SecureAggregation, timeout: float,
                 node_partitions: dict[int, int], names: list[str], server_round: int) -> SecureRound:
    """Run one round's training exchange through SecAgg+ (``messages``: the round's training messages, one per
    sampled node; ``names``: the reply's tensors, whose name order the clients sum in)."""
    contents = {m.metadata.dst_node_id: m.content for m in messages}
    watched = _WatchedGrid(grid, timeout, node_partitions)
    run_id = grid.run.run_id
    handover = _Handover([GridClientProxy(node, grid, run_id) for node in contents])
    state = RecordDict({MAIN_CONFIGS_RECORD: ConfigRecord({WorkflowKey.CURRENT_ROUND: server_round}),
                        MAIN_PARAMS_RECORD: ArrayRecord()})
    context = LegacyContext(Context(run_id=run_id, node_id=0, node_config={}, state=state, run_config={}),
                            strategy=handover)
    _RoundWorkflow(contents, settings, timeout)(watched, context)  # type: ignore[arg-type]
    faults = sorted(watched.faults, key=lambda f: f.partition_id)
    if handover.results is None:
        left = len(contents) - len({f.partition_id for f in faults})
        return SecureRound(None, [], faults, halted=(
            f"secure aggregation halted in its {watched.stages[-1]} stage: {left} of {len(contents)} clients left, "
            f"fewer than a client's reconstruction_threshold of live neighbours"))
    contributors = sorted((Contributor(node_partitions[proxy.node_id], proxy.node_id, MetricRecord(res.metrics))
                           for proxy, res in handover.results), key=lambda c: c.partition_id)
    arrays = parameters_to_ndarrays(handover.results[0][1].parameters)
    aggregate = {name: torch.from_numpy(np.asarray(a, dtype=np.float32)) for name, a in zip(sorted(names), arrays)}
    return SecureRound(aggregate, contributors, faults,
                       bound=quantization_bound(settings, [c.num_examples for c in contributors]))
