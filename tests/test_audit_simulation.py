"""The adversarial server in a real Flower simulation: attacks, receipts, guard (crash safety: test_reliability)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedmjp.audit import AuditStore
from fedmjp.audit.summary import summarize

from .flower_runs import in_sweep, scenario

pytestmark = pytest.mark.slow

AUDITED = in_sweep(scenario(
    name="audited",
    audit={"attacks": [{"name": "april"}], "store_ground_truth": True},
    arms={
        "vit": {},
        "mjp": {"model": {"name": "mjp_vit_tiny_patch4_32", "mjp": {"ratio": 0.25}}},
        "guarded": {"guard": {"enabled": True, "max_psnr": 30.0, "action": "noise", "noise_scale": 1.0}},
    },
))


@pytest.fixture(scope="module")
def audited_run(sweep: dict[str, Path]) -> Path:
    return sweep[AUDITED["name"]]


def scored(run: Path, arm: str, source: str = "server") -> list:
    return [r for r in AuditStore(run).records() if r.arm == arm and r.source == source and r.status == "scored"]


def test_april_audit_shows_vit_leaking_and_mjp_not(audited_run: Path) -> None:
    vit, mjp = scored(audited_run, "vit"), scored(audited_run, "mjp")
    assert len(vit) == len(mjp) == 4  # 2 rounds x 2 clients, every update attacked
    assert min(r.metrics["psnr"] for r in vit) >= 60
    assert max(r.metrics["psnr"] for r in mjp) < 30
    # Scored by the clients' receipts: shuffled/unshuffled split from the client's own mask.
    assert all(r.shuffled_steps == [True] and "psnr_shuffled" in r.metrics for r in mjp)
    assert all(r.shuffled_steps == [False] for r in vit)
    assert all(r.leakage is not None for r in vit + mjp)


def test_audit_files_are_owner_only_and_reference_existing_images(audited_run: Path) -> None:
    audit = audited_run / "audit"
    assert (audit.stat().st_mode & 0o777) == 0o700
    assert (audit / "records.jsonl").stat().st_mode & 0o777 == 0o600
    for record in AuditStore(audited_run).records():
        if record.image:
            image = audited_run / record.image
            assert image.stat().st_mode & 0o777 == 0o600
            assert record.truth_image and (audited_run / record.truth_image).exists()


def test_client_guard_noises_a_leaking_update_and_both_views_are_recorded(audited_run: Path) -> None:
    guard = [r for r in AuditStore(audited_run).records() if r.arm == "guarded" and r.source == "client-guard"]
    assert len(guard) == 4 and all(r.reason == "noise" and r.metrics["psnr"] >= 60 for r in guard)
    # What the curious server got after the guard noised the update.
    assert max(r.metrics["psnr"] for r in scored(audited_run, "guarded")) < 30


def test_guard_records_written_by_the_round_are_counted_by_summarize(audited_run: Path) -> None:
    """Contract: what the real guard and auditor write is what the summary counts (4 noised replies)."""
    guard = summarize(audited_run)["arms"]["guarded"]["guard"]
    assert (guard["count"], guard["noised"], guard["withheld"]) == (4, 4, 0)


def test_audit_records_keep_what_the_attack_reported_about_itself(audited_run: Path) -> None:
    # APRIL reports the rank of its solve: full on a ViT, short by the shuffled rows on MJP.
    ranks = {arm: {r.info["rank"] for r in scored(audited_run, arm)} for arm in ("vit", "mjp")}
    assert ranks["vit"] == {64.0} and all(rank < 64 for rank in ranks["mjp"])
