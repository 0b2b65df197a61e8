"""Closing a round off its critical path: while the next round's clients train, the server evaluates the
round's global model on its own copy of the held-out split, writes the round's metrics line and checkpoints it.

What closing needs is taken when the round's training ends (``RoundEnd``): a copy of the global weights, the
optimiser's and the sampler's state and how far the audit had got, since the next round changes the live ones
meanwhile. Rounds close one at a time and in order: a round's line follows the previous round's line, and its
checkpoint follows its line, as the resume expects. A federated evaluation uses the round's clients, so it is
part of the round; its result comes with the RoundEnd.
"""

from __future__ import annotations

import copy
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from fedmjp.audit.records import Fault, Phase, fault_tags
from fedmjp.federation import checkpoint
from fedmjp.federation.rundir import append_jsonl
from fedmjp.federation.workload import evaluate_global
from fedmjp.protocol import LOSS

if TYPE_CHECKING:
    from .rounds import ArmRun, Trained


@dataclass(frozen=True)
class Evaluation:
    """The global model's top-1 and loss on the held-out split, where, and the replies that failed."""

    accuracy: float
    loss: float
    evaluated_on: str
    faults: list[Fault] = field(default_factory=list)


@dataclass(frozen=True)
class RoundEnd:
    """A trained round as closing needs it: ``state`` is the server's, copied when training ended; ``test`` a
    federated evaluation's result (None: the server evaluates ``state.model`` when it closes the round)."""

    server_round: int
    started: float  # time.perf_counter() at the round's start
    trained: Trained
    state: checkpoint.Checkpoint
    test: Evaluation | None = None


class Closer:
    """Closes an arm's rounds in a thread of its own, one after the other. A context manager: leaving it waits
    for the last round to close (its error raised, unless the arm already failed)."""

    def __init__(self, run: ArmRun) -> None:
        self.run = run
        # The model the server evaluates: the live one is being stepped by the next round meanwhile.
        self.evaluated = copy.deepcopy(run.model) if run.on_server else None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"close-{run.arm.name}")
        self._pending: Future[None] | None = None

    def close(self, end: RoundEnd) -> None:
        """Close ``end`` once the previous round has closed (raising that round's error, if any)."""
        self.wait()
        self._pending = self._thread.submit(self._close, end)

    def wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def _close(self, end: RoundEnd) -> None:
        run = self.run
        test = end.test if end.test is not None else self._evaluate(end.state.model)
        record(run, end.server_round, end.trained, test, time.perf_counter() - end.started)
        checkpoint.save(run.checkpoint_path, replace(end.state, metrics_bytes=checkpoint.file_size(run.metrics_path)))

    def _evaluate(self, weights: dict[str, Any]) -> Evaluation:
        assert self.evaluated is not None, "a federated evaluation comes with its round's end"
        self.evaluated.load_state_dict(weights)
        test = evaluate_global(self.run.arm, self.evaluated)
        return Evaluation(test["accuracy"], test["loss"], "server")

    def __enter__(self) -> Closer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        try:
            self.wait()
        except Exception:
            if exc_type is None:  # the arm's first error is the one to report
                raise
        finally:
            self._thread.shutdown()


def record(run: ArmRun, server_round: int, trained: Trained, test: Evaluation, seconds: float) -> None:
    """The round's metrics line; ``seconds``: from the round's start until its evaluation ended."""
    append_jsonl(run.metrics_path, {
        "round": server_round,
        "accuracy": test.accuracy,
        "loss": test.loss,
        "evaluated_on": test.evaluated_on,
        "train_loss": float(trained.metrics[LOSS]),
        "clients": len(trained.partitions),
        "aggregated": trained.aggregated,
        "faults": [fault_line(f, "train") for f in trained.faults] + [fault_line(f, "evaluate") for f in test.faults],
        "seconds": seconds,
        **trained.extra,
    })


def fault_line(fault: Fault, phase: Phase) -> dict[str, Any]:
    return {"partition_id": fault.partition_id, "reason": fault.reason, **fault_tags(fault, phase)}
