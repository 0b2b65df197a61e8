"""The client guard judges every update it sends: its attack, else a fallback that applies, else the
``on_unjudged`` policy; the records and the audit's counts say which happened.

The unit tests run the guard's ``inspect`` on what a real client computes (``client_round`` on the built-in
photos, a 2-block ViT-Ti/4); the last tests run guarded arms in a real Flower simulation.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

import fedmjp.commands.audit  # noqa: F401  (registers the command)
from fedmjp.audit import AuditStore
from fedmjp.audit.guard import Verdict, inspect, withheld_reply
from fedmjp.audit.receipt import round_examples
from fedmjp.audit.records import guard_record
from fedmjp.audit.report import render_report
from fedmjp.audit.summary import summarize
from fedmjp.cli import app
from fedmjp.federation.rundir import atomic_write
from fedmjp.scenario import Arm, parse_scenario
from fedmjp.federation.train import compute_gradient
from fedmjp.federation.workload import build_model, client_round, dataset, stack
from fedmjp.protocol import UNJUDGED, ErrorCode, GuardReport, read_error, withheld_report

from .flower_runs import in_sweep, scenario

PATCH = 4
# A small budget: the tests check who judges, not how well.
SMALL_FALLBACK = [{"name": "adaptive", "options": {"steps": 5, "restarts": 1}},
                  {"name": "ig", "options": {"steps": 5, "restarts": 1}}]


def guarded_arm(training: dict[str, Any], model: str = "vit_tiny_patch4_32", **guard: Any) -> Arm:
    raw = {"data": {"source": "photos"}, "clients": {"num_clients": 2}, "training": training,
           "model": {"name": model, "kwargs": {"depth": 2}},
           "guard": {"enabled": True, "fallback": SMALL_FALLBACK, **guard}}
    return parse_scenario(raw).arms["run"]


def judge_own_round(arm: Arm) -> Verdict:
    """What the client of partition 0 computes in round 1, judged by its guard against the examples it used."""
    weights = build_model(arm).state_dict()
    work = client_round(arm, weights, partition_id=0, server_round=1)
    indices, shuffled = round_examples(work.batches, [j.mask if j else None for j in work.result.jigsaws])
    truth, labels = stack(dataset(arm, "train"), indices)
    return inspect(arm, weights, work.result.tensors, truth, labels, shuffled, PATCH, 1, work.result.settings)


def judge_a_larger_batch_than_configured(arm: Arm) -> Verdict:
    """A client whose batch (4) differs from the configured one (1): its guard's attack cannot apply."""
    model = build_model(arm)
    truth, labels = stack(dataset(arm, "train"), np.arange(4))
    result = compute_gradient(model, truth, labels)
    return inspect(arm, model.state_dict(), result.tensors, truth, labels, None, PATCH, 1, result.settings)


def test_the_fallback_judges_a_fedsgd_batch_of_four_the_configured_attack_cannot() -> None:
    arm = guarded_arm({"batch_size": 4})
    verdict = judge_own_round(arm)
    # april cannot read a batch, adaptive needs an MJP model: ig (the chain's third) judged.
    assert verdict.judge == 2 and math.isfinite(verdict.psnr) and verdict.psnr > 0
    assert verdict.action == ("pass" if verdict.psnr <= arm.guard.max_psnr else "withhold")
    record = guard_record(arm, 1, 0, GuardReport.from_metrics(verdict.report.to_metrics()), 4)
    assert (record.attack, record.status, record.info) == ("ig", "scored", {"fallback": True})
    assert record.metrics["psnr"] == pytest.approx(verdict.psnr)


def test_a_withheld_update_names_the_fallback_that_judged_it() -> None:
    arm = guarded_arm({"batch_size": 4}, max_psnr=0.0)
    verdict = Verdict("withhold", 12.3, 1.0, judge=2)
    error = withheld_reply(verdict, arm.guard)
    reply = read_error(error)  # as the server reads it
    assert error.code == reply.code == ErrorCode.GUARD_WITHHELD
    assert reply.text == "withheld by client guard: ig (fallback 2) PSNR 12.3 dB > 0.0"
    record = guard_record(arm, 1, 0, withheld_report(reply), withheld=f"error: {reply.text}")
    assert (record.attack, record.status, record.metrics, record.info) == (
        "ig", "withheld", {"psnr": 12.3}, {"fallback": True})


def test_the_fallback_replays_an_mjp_fedavg_update_of_several_steps() -> None:
    arm = guarded_arm({"mode": "fedavg", "batch_size": 2, "local_steps": 2}, model="mjp_vit_tiny_patch4_32")
    verdict = judge_own_round(arm)
    # april and adaptive read one SGD step only; ig replays the client's two steps.
    assert verdict.judge == 2 and math.isfinite(verdict.psnr)


def test_an_update_no_attack_can_judge_is_withheld_by_default() -> None:
    arm = guarded_arm({"batch_size": 1}, fallback=[{"name": "adaptive"}])
    verdict = judge_a_larger_batch_than_configured(arm)
    assert (verdict.action, verdict.judge, verdict.psnr) == ("withhold", None, None)
    reply = read_error(withheld_reply(verdict, arm.guard))
    assert reply.text.startswith("withheld by client guard: unjudged (april not-applicable: ")
    assert "adaptive not-applicable: adaptive: vit_tiny_patch4_32 is not an MJP model" in reply.text
    record = guard_record(arm, 1, 0, withheld_report(reply), withheld=f"error: {reply.text}")
    assert (record.attack, record.status, record.metrics) == ("none", "withheld", {})


def test_on_unjudged_send_lets_it_out_marked_unjudged() -> None:
    arm = guarded_arm({"batch_size": 1}, fallback=[{"name": "adaptive"}], on_unjudged="send")
    verdict = judge_a_larger_batch_than_configured(arm)
    assert (verdict.action, verdict.judge) == ("pass", None)
    metrics = verdict.report.to_metrics()
    assert metrics["guard.attack"] == UNJUDGED and "guard.psnr" not in metrics
    record = guard_record(arm, 1, 0, GuardReport.from_metrics(metrics), 4)
    assert (record.attack, record.status, record.reason) == ("none", "unjudged", "pass")


def write_guard_run(run_dir: Path, arm: Arm, records: list) -> None:
    scenario_text = yaml.safe_dump({"name": "guard-test", "arms": {arm.name: arm.model_dump(mode="json")}})
    atomic_write(run_dir / "scenario.yaml", scenario_text.encode())
    store = AuditStore(run_dir)
    for record in records:
        store.append(record)


def test_the_audit_counts_and_shows_updates_sent_unjudged(tmp_path: Path) -> None:
    arm = guarded_arm({"batch_size": 1}, fallback=[{"name": "adaptive"}], on_unjudged="send")
    unjudged = {"guard.action": 0, "guard.seconds": 0.1, "guard.attack": UNJUDGED}
    judged = {**unjudged, "guard.attack": 1, "guard.psnr": 14.0}  # the chain's 1: adaptive
    records = [guard_record(arm, 1, 0, GuardReport.from_metrics(unjudged), 4),
               guard_record(arm, 1, 1, GuardReport.from_metrics(judged), 4),
               guard_record(arm, 2, 0, GuardReport("withhold", 0.1),
                            withheld="error: withheld by client guard: unjudged (april not-applicable: x)"),
               guard_record(arm, 2, 1, GuardReport("withhold", 0.1, judge=0, psnr=99.0),  # the chain's 0: april
                            withheld="error: withheld by client guard: april PSNR 99.0 dB > 30.0")]
    write_guard_run(tmp_path, arm, records)
    guard = summarize(tmp_path)["arms"]["run"]["guard"]
    assert {key: guard[key] for key in ("count", "judged", "judged_by_fallback", "withheld", "withheld_unjudged",
                                        "sent_unjudged")} == {"count": 4, "judged": 2, "judged_by_fallback": 1,
                                                              "withheld": 2, "withheld_unjudged": 1,
                                                              "sent_unjudged": 1}
    assert set(guard["attacks"]) == {"adaptive", "april"}  # the judges; "none" judged nothing
    shown = CliRunner().invoke(app, ["audit", str(tmp_path)])
    assert shown.exit_code == 0 and "1 sent unjudged" in shown.output
    page = render_report(tmp_path, summarize(tmp_path))
    assert "<th>sent unjudged</th>" in page and "<td class='num'>1</td></tr>" in page


# --------------------------------------------------------------------------- a real Flower simulation

GUARDED = in_sweep(scenario(
    name="guarded",
    training={"rounds": 1},
    audit={"attacks": []},
    guard={"enabled": True, "fallback": SMALL_FALLBACK},
    arms={
        "fedsgd-batch-4": {"training": {"batch_size": 4}},
        "fedavg-2-steps": {"training": {"mode": "fedavg", "batch_size": 2, "local_steps": 2}},
    },
))


@pytest.mark.slow
def test_every_update_a_guarded_client_sends_was_judged_by_an_attack_that_applies(sweep: dict[str, Path]) -> None:
    run = sweep[GUARDED["name"]]
    records = [r for r in AuditStore(run).records() if r.source == "client-guard"]
    for arm in GUARDED["arms"]:
        mine = [r for r in records if r.arm == arm]
        # One record per client and round: judged by ig (april cannot apply here), or withheld unjudged.
        assert len(mine) == 2
        for record in mine:
            judged = record.attack == "ig" and record.info == {"fallback": True} and "psnr" in record.metrics
            assert judged or (record.status == "withheld" and record.attack == "none"), record
        guard = summarize(run)["arms"][arm]["guard"]
        assert guard["sent_unjudged"] == 0 and guard["judged"] + guard["withheld_unjudged"] == 2
    shown = CliRunner().invoke(app, ["audit", str(run)])
    assert shown.exit_code == 0 and shown.output.count("0 sent unjudged") == 2
