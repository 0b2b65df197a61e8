"""The dishonest server in a real Flower simulation: planted weights to one client in round 1, the reply
attacked by imprint (server: malicious) and kept out of the aggregate; with the client check on, refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedmjp.audit import AuditStore

from .flower_runs import in_sweep, scenario

pytestmark = pytest.mark.slow

DISHONEST = in_sweep(scenario(
    name="dishonest",
    audit={"attacks": [], "server": {"kind": "imprint", "rounds": [1], "clients": [0], "images": {"count": 32}}},
    arms={
        "vit": {},
        "mjp": {"model": {"name": "mjp_vit_tiny_patch4_32", "mjp": {"ratio": 0.25}}},
        "checked": {"guard": {"model_check": True}},
    },
))


@pytest.fixture(scope="module")
def dishonest_run(sweep: dict[str, Path]) -> Path:
    return sweep[DISHONEST["name"]]


def rounds(run: Path, arm: str) -> list[dict]:
    return [json.loads(line) for line in (run / "arms" / arm / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("arm", ["vit", "mjp"])
def test_planted_reply_is_attacked_as_malicious_and_left_out_of_the_aggregate(dishonest_run: Path, arm: str) -> None:
    records = [r for r in AuditStore(dishonest_run).records() if r.arm == arm and r.attack == "imprint"]
    [record] = records  # round 1, partition 0 only
    assert (record.round, record.partition_id, record.status) == (1, 0, "scored")
    assert record.threat_model["server"] == "malicious"
    # Two-block test model: one binning block of 768 bins for 64 patches.
    assert record.metrics["patches_exact"] >= 0.8 and "psnr" in record.metrics
    first, second = rounds(dishonest_run, arm)
    assert first["aggregated"] == [1] and second["aggregated"] == [0, 1]


def test_client_check_refuses_the_planted_model_and_the_audit_records_it(dishonest_run: Path) -> None:
    records = [r for r in AuditStore(dishonest_run).records() if r.arm == "checked"]
    assert not [r for r in records if r.attack == "imprint"]
    [fault] = [r for r in records if r.status == "fault"]
    assert (fault.round, fault.partition_id) == (1, 0) and "refused by client model check: fc1_stable_rank on blocks.0.mlp.fc1.weight" in fault.reason
    first, second = rounds(dishonest_run, "checked")
    assert first["aggregated"] == [1] and second["aggregated"] == [0, 1]
