"""A real FedAvg federation (several local steps, momentum 0.9) audited end to end in a Flower simulation."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedmjp.audit import AuditStore

from .flower_runs import in_sweep, scenario

pytestmark = pytest.mark.slow

FEDAVG = in_sweep(scenario(
    name="fedavg-audited",
    training={"rounds": 1, "mode": "fedavg", "batch_size": 2, "local_steps": 3, "momentum": 0.9, "lr": 0.05},
    audit={"attacks": [{"name": "ig", "options": {"steps": 20, "restarts": 1}}]},
))


@pytest.fixture(scope="module")
def fedavg_run(sweep: dict[str, Path]) -> Path:
    return sweep[FEDAVG["name"]]


def _records(run: Path) -> list:
    return [r for r in AuditStore(run).records() if r.source == "server" and r.attack == "ig"]


def test_fedavg_replies_are_replayed_and_scored_by_receipts(fedavg_run: Path) -> None:
    records = _records(fedavg_run)
    assert len(records) == 2 and all(r.status == "scored" for r in records)  # 1 round x 2 clients
    for record in records:
        assert record.num_examples == 6  # 3 local steps of 2
        assert record.threat_model["local_hyperparameters"]  # replayed, not read as one gradient
        assert "patches_exact" in record.metrics and record.leakage is not None
        assert record.shuffled_steps == [False, False, False]


def test_the_replay_uses_the_settings_the_client_reported(fedavg_run: Path) -> None:
    assert all(r.threat_model["local_settings_source"] == "reported" for r in _records(fedavg_run))


def test_in_process_rounds_audit_the_same_replies_and_batches_as_the_flower_run(fedavg_run: Path,
                                                                                tmp_path: Path) -> None:
    from fedmjp.launch.inprocess import simulate_in_process
    from fedmjp.scenario import parse_scenario

    local = tmp_path / "local"
    simulate_in_process(parse_scenario(FEDAVG), local)
    ours = {(r.arm, r.partition_id): r for r in _records(local)}
    theirs = {(r.arm, r.partition_id): r for r in _records(fedavg_run)}
    assert ours.keys() == theirs.keys() and len(ours) == 2  # 1 round x 2 clients
    for key, mine in ours.items():
        other = theirs[key]
        assert (mine.status, mine.num_examples, mine.shuffled_steps) == (other.status, other.num_examples,
                                                                         other.shuffled_steps)
        assert mine.threat_model == other.threat_model
        # The same examples scored: the grey baseline depends on nothing else.
        assert mine.baseline == pytest.approx(other.baseline, abs=1e-6)
        # Ray's clients run one thread, this process two: the replies differ by rounding only.
        assert mine.metrics["psnr"] == pytest.approx(other.metrics["psnr"], abs=0.5)
