"""A round closes while the next one trains: lines in round order, each checkpoint with the state of its own
round's end, and a failed close raised as the arm's error."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from flwr.app import MetricRecord

from fedmjp.federation import checkpoint
from fedmjp.federation.aggregate import ServerOptimizer
from fedmjp.federation.workload import build_model, evaluate_global
from fedmjp.scenario import parse_scenario
from server.closing import Closer, RoundEnd
from server.rounds import Trained

ARM = parse_scenario({"name": "closing", "device": "cpu", "data": {"source": "photos", "test_limit": 8},
                      "model": {"name": "vit_tiny_patch4_32", "kwargs": {"depth": 1}}}).arms["run"]


def a_run(folder: Path) -> SimpleNamespace:
    torch.manual_seed(0)
    model = build_model(ARM)
    return SimpleNamespace(arm=ARM, model=model, on_server=True,
                           optimizer=ServerOptimizer(model, "gradient", "adam", 0.1), metrics_path=folder / "metrics.jsonl", checkpoint_path=folder / "checkpoint.pt",
                           audit_path=folder / "records.jsonl")


def round_end(run: SimpleNamespace, server_round: int) -> RoundEnd:
    trained = Trained(MetricRecord({"loss": float(server_round)}), [0], [0], [])
    state = checkpoint.snapshot(server_round, run.model, run.optimizer, random.Random(server_round).getstate(),
                                run.metrics_path, run.audit_path)
    return RoundEnd(server_round, time.perf_counter(), trained, state)


def test_rounds_close_in_order_each_with_the_state_its_training_ended_with(tmp_path: Path) -> None:
    run = a_run(tmp_path)
    expected = {}
    with Closer(run) as closer:
        for server_round in (1, 2, 3):
            run.optimizer.step([{n: torch.ones_like(p) for n, p in run.optimizer.params.items()}], [1.0])
            expected[server_round] = {k: v.clone() for k, v in run.model.state_dict().items()}
            run.audit_path.write_text("x" * server_round)  # how far the audit had got at this round's end
            closer.close(round_end(run, server_round))
            # The next round changes the live model and appends to the audit at once, while this one closes.
            with torch.no_grad():
                next(run.model.parameters()).add_(100.0)
            run.audit_path.write_text("y" * 50)
            closer.wait()
            saved = checkpoint.load(run.checkpoint_path)
            lines = run.metrics_path.read_text().splitlines()
            assert [json.loads(line)["round"] for line in lines] == list(range(1, server_round + 1))
            assert saved.round == server_round and saved.audit_bytes == server_round
            assert saved.metrics_bytes == run.metrics_path.stat().st_size  # its own line included
            assert all(torch.equal(saved.model[k], expected[server_round][k]) for k in saved.model)
            with torch.no_grad():
                next(run.model.parameters()).sub_(100.0)
    # The server's copy evaluated the round's own weights, not the live model the next round changed.
    evaluated = build_model(ARM)
    evaluated.load_state_dict(expected[3])
    test = evaluate_global(ARM, evaluated)
    assert (json.loads(lines[-1])["accuracy"], json.loads(lines[-1])["loss"]) == (test["accuracy"], test["loss"])


def test_a_failed_close_is_the_arms_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = a_run(tmp_path)

    def broken(arm: object, model: object) -> dict[str, float]:
        raise RuntimeError("evaluation broke")

    monkeypatch.setattr("server.closing.evaluate_global", broken)
    with pytest.raises(RuntimeError, match="evaluation broke"):
        with Closer(run) as closer:
            closer.close(round_end(run, 1))
    assert not run.metrics_path.exists() and not run.checkpoint_path.exists()
