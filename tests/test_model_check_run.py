"""The client model check over a whole FedAvg run that learns (real Flower simulation): the server plants
weights for partition 0 in round 10; with the check on, that model is refused and no honest one is, in any
of the 20 rounds, for ViT and MJP; `fedmjp audit` shows both."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import fedmjp.commands.audit  # noqa: F401  (registers the command)
from fedmjp.audit import AuditStore
from fedmjp.cli import app
from fedmjp.defences.model_check import REFUSAL
from fedmjp.protocol import ErrorCode

from .flower_runs import in_sweep, scenario

pytestmark = pytest.mark.slow

ROUNDS = 20
PLANTED = (10, 0)  # (round, partition)
# Measured: test top-1 0.49 after round 1 for both, 0.90 (ViT) and 0.97 (MJP) after round 20; on 80 test
# crops it swings by up to 0.2 from one round to the next, hence a margin well below the gain.
LEARNED = 0.25

CHECKED_FEDAVG = in_sweep(scenario(
    name="model-check-run",
    data={"source": "photos", "test_limit": 80},
    training={"rounds": ROUNDS, "mode": "fedavg", "batch_size": 16, "local_steps": 4, "optimizer": "adam",
              "lr": 0.001, "server_optimizer": "sgd", "server_lr": 1.0},
    guard={"model_check": True},
    audit={"attacks": [], "server": {"kind": "imprint", "rounds": [PLANTED[0]], "clients": [PLANTED[1]],
                                     "images": {"count": 32}}},
    arms={"vit": {}, "mjp": {"model": {"name": "mjp_vit_tiny_patch4_32", "mjp": {"ratio": 0.25}}}},
))
ARMS = ["vit", "mjp"]


@pytest.fixture(scope="module")
def checked_run(sweep: dict[str, Path]) -> Path:
    return sweep[CHECKED_FEDAVG["name"]]


def rounds(run: Path, arm: str) -> list[dict]:
    return [json.loads(line) for line in (run / "arms" / arm / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("arm", ARMS)
def test_the_planted_model_and_no_honest_one_is_refused_in_twenty_rounds(checked_run: Path, arm: str) -> None:
    faults = [(row["round"], fault["partition_id"], fault["reason"]) for row in rounds(checked_run, arm)
              for fault in row["faults"]]
    [(planted_round, partition, reason)] = faults  # zero false alarms: no other fault in any round
    assert (planted_round, partition) == PLANTED and REFUSAL in reason
    records = [r for r in AuditStore(checked_run).records() if r.arm == arm]
    [fault] = [r for r in records if r.status == "fault"]
    assert (fault.round, fault.partition_id, fault.info["planted"]) == (*PLANTED, True) and REFUSAL in fault.reason
    assert fault.info["error"] == ErrorCode.MODEL_REFUSED.name  # told apart by its code, not its words
    assert not [r for r in records if r.attack == "imprint"]  # the planted reply never came


@pytest.mark.parametrize("arm", ARMS)
def test_the_run_learns(checked_run: Path, arm: str) -> None:
    accuracy = [row["accuracy"] for row in rounds(checked_run, arm)]
    assert len(accuracy) == ROUNDS and accuracy[-1] >= accuracy[0] + LEARNED


def test_the_audit_shows_the_planted_model_refused_and_no_honest_one(checked_run: Path) -> None:
    audit = CliRunner().invoke(app, ["audit", str(checked_run), "--json"])
    assert audit.exit_code == 0, audit.output
    arms = json.loads(audit.stdout)["arms"]
    for arm in ARMS:
        # Two clients a round, every model checked: one refused, 39 trained on.
        assert arms[arm]["model_check"] == {"checked": 2 * ROUNDS, "refused": 1, "refused_planted": 1,
                                            "refused_honest": 0}
