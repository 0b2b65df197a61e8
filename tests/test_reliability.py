"""Reliability: malformed input everywhere, client faults, and SIGKILL (records intact) + resume."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import fedmjp.commands  # noqa: F401  (registers the sub-commands)
from fedmjp.audit import AuditStore
from fedmjp.cli import app
from fedmjp.federation.faults import injected_fault, reply_problem
from fedmjp.federation.rundir import read_jsonl
from fedmjp.scenario import parse_scenario

from .flower_runs import finish, in_sweep, kill_marked, scenario, start_simulate

VALID = scenario(name="base", training={"rounds": 4})

# Each mutation turns the valid scenario into a malformed one (a (path, value) to set).
BAD_VALUES = {
    ("training", "rounds"): [0, -3, "many", 2.5, None, [], {}],
    ("training", "batch_size"): [0, "big", -1],
    ("training", "mode"): ["fedprox", 3, None],
    ("training", "lr"): [0, -0.1, "fast"],
    ("clients", "num_clients"): [0, -1, "four", 1.5],
    ("clients", "per_round"): [3, 100, 0],
    ("clients", "min_per_round"): [5, 0],
    ("clients", "cpus"): [0.5, 0, "one"],  # whole CPUs: Flower's federation config takes no fraction
    ("data", "source"): ["mnist", 7, None],
    ("data", "root"): [12],
    ("model", "name"): ["vit_nonexistent_model", 5, ""],
    ("model", "mjp"): [{"ratio": 0.1}, "yes"],
    ("audit", "attacks"): [[{"name": "nope"}], "april", [{"name": "april", "budget": 3}]],
    ("audit", "clients"): [0, -2, "some"],
    ("seed",): ["zero", 1.5, None],
    ("device",): [3],
    ("faults",): [{"fraction": 2}, {"kinds": ["explode"]}, {"kinds": []}],
}
UNKNOWN_KEYS = [("colour",), ("training", "epochz"), ("data", "path"), ("model", "mjp_ratio"), ("clients", "n")]


def set_path(raw: dict, path: tuple, value: object) -> dict:
    node = raw
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    return raw


@st.composite
def malformed_scenarios(draw: st.DrawFn) -> str:
    """A scenario file with one or more faults: bad values, unknown keys, broken YAML."""
    kind = draw(st.sampled_from(["value", "unknown", "yaml", "not-a-mapping", "april-batch", "missing-root"]))
    raw = yaml.safe_load(yaml.safe_dump(VALID))
    if kind == "value":
        path = draw(st.sampled_from(sorted(BAD_VALUES)))
        set_path(raw, path, draw(st.sampled_from(BAD_VALUES[path])))
    elif kind == "unknown":
        set_path(raw, draw(st.sampled_from(UNKNOWN_KEYS)), draw(st.integers()))
    elif kind == "april-batch":
        raw["training"]["batch_size"] = draw(st.integers(min_value=2, max_value=64))
    elif kind == "missing-root":
        raw["data"] = {"source": "imagefolder", "root": "/nonexistent/" + draw(st.text("abc", min_size=1))}
    elif kind == "not-a-mapping":
        return yaml.safe_dump(draw(st.one_of(st.lists(st.integers()), st.text(min_size=1), st.integers())))
    else:
        text = yaml.safe_dump(raw)
        cut = draw(st.integers(min_value=1, max_value=len(text) - 1))
        return text[:cut] + draw(st.sampled_from(["[", "{", ": :", "\t- x\n  y: [", "'"]))
    if draw(st.booleans()):  # sometimes inside an arm instead of the base
        return yaml.safe_dump({"name": "armed", "arms": {"a": {}, "b": {k: v for k, v in raw.items() if k != "name"}}})
    return yaml.safe_dump(raw)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=malformed_scenarios())
def test_malformed_scenarios_get_one_line_exit_code_2_and_no_output(tmp_path: Path, text: str) -> None:
    folder = tmp_path / uuid.uuid4().hex
    folder.mkdir()
    path = folder / "bad.yaml"
    path.write_text(text)
    out = folder / "run"
    result = CliRunner().invoke(app, ["simulate", str(path), "--out", str(out)])
    assert result.exit_code == 2, (text, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output and not out.exists()


def test_bad_cli_arguments_and_corrupted_run_directories_exit_with_2(tmp_path: Path) -> None:
    runner = CliRunner()
    cases = [
        ["simulate"],  # neither a scenario nor --resume
        ["simulate", "--resume", str(tmp_path / "missing")],
        ["simulate", "scenarios/ci-smoke.yaml", "--set", "training.rounds"],
        ["simulate", "scenarios/ci-smoke.yaml", "--set", "training.rounds=-1"],
        # A sweep writes each scenario into OUT/NAME: two of the same name would share a run directory.
        ["simulate", "scenarios/ci-smoke.yaml", "scenarios/ci-smoke.yaml", "--out", str(tmp_path / "sweep")],
        ["audit", str(tmp_path)],
    ]
    broken = tmp_path / "broken"
    (broken / "arms" / "run").mkdir(parents=True)
    (broken / "scenario.yaml").write_text(yaml.safe_dump({"name": "b", "arms": {"run": {}}}))
    (broken / "arms" / "run" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    cases.append(["simulate", "--resume", str(broken)])
    for args in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert "Traceback" not in result.output
        assert len(result.stderr.strip().splitlines()) == 1, (args, result.stderr)
    assert not (tmp_path / "sweep").exists()


def comparable(run: Path, arms: tuple[str, ...] = ("run",)) -> tuple[list, list]:
    metrics = [{k: v for k, v in r.items() if k != "seconds"}
               for arm in arms for r in read_jsonl(run / "arms" / arm / "metrics.jsonl")]
    records = [{**r.to_json(), "seconds": None} for r in AuditStore(run).records()]
    return metrics, records


# Two arms share one Flower run and one audit file. A 12-block model evaluated on every held-out digit keeps
# a round's audit records on disk for a second or so before its metrics line and checkpoint: a kill there
# leaves records of a round that never finished, which a resume must cut back.
TWO_ARMS = in_sweep(scenario(name="two-arms", data={"source": "digits", "test_limit": None}, training={"rounds": 2},
                             model={"name": "vit_tiny_patch4_32", "kwargs": {"depth": 12}},
                             arms={"first": {}, "second": {"seed": 1}}))
ARMS = ("first", "second")


@pytest.fixture(scope="module")
def uninterrupted(sweep: dict[str, Path]) -> Path:
    return sweep[TWO_ARMS["name"]]


def audited_rounds(run: Path, arm: str) -> set[int]:
    return {r.round for r in AuditStore(run).records() if r.arm == arm}


def assert_records_intact(run: Path) -> None:
    """What a killed run had written of its audit is whole: at most a torn last line, and every complete
    record a scored attack whose reconstruction is on disk."""
    lines = (run / "audit" / "records.jsonl").read_bytes().splitlines()
    complete = AuditStore(run).records()
    assert complete and len(complete) >= len(lines) - 1
    json.loads(lines[0])
    for record in complete:
        assert record.status == "scored" and (run / record.image).exists(), record


# Where the chained run below is killed: in round 1 of the first arm (before any checkpoint), in round 1 of
# the second arm (before its first checkpoint, after the first arm's records), and after a checkpoint.
KILLS = (("first", 1), ("second", 1), ("second", 2))


@pytest.mark.slow
def test_sigkill_after_a_rounds_audit_then_resume_equals_an_uninterrupted_run(
        uninterrupted: Path, tmp_path: Path, ray_cluster: str) -> None:
    """One run killed at each point of KILLS in turn, each time resumed: the resumed run ends where an
    uninterrupted one does (one chain, not one run per point: the suite's time)."""
    mark = uuid.uuid4().hex
    run = tmp_path / "run"
    resume: tuple[str, ...] = ()
    for arm, server_round in KILLS:
        process = start_simulate(TWO_ARMS, tmp_path, mark, *resume, ray_address=ray_cluster)
        metrics = run / "arms" / arm / "metrics.jsonl"
        deadline = time.monotonic() + 600
        # The previous round's line is written while this round trains (its evaluation runs meanwhile).
        while time.monotonic() < deadline and not (server_round in audited_rounds(run, arm)
                                                   and len(read_jsonl(metrics)) >= server_round - 1):
            time.sleep(0.01)
        os.killpg(process.pid, signal.SIGKILL)
        kill_marked(mark)
        # The kill came between the round's audit records and its metrics line: that round never finished.
        assert server_round in audited_rounds(run, arm), (arm, server_round)
        assert len(read_jsonl(metrics)) == server_round - 1, (arm, server_round)
        assert_records_intact(run)
        resume = ("--resume", str(run))

    finish(start_simulate(TWO_ARMS, tmp_path, mark, *resume, ray_address=ray_cluster), mark)
    assert comparable(run, ARMS) == comparable(uninterrupted, ARMS)
    assert len(comparable(uninterrupted, ARMS)[0]) == 4
    for name in ARMS:
        a = torch.load(uninterrupted / "arms" / name / "final_weights.pt")
        b = torch.load(run / "arms" / name / "final_weights.pt")
        assert all(torch.equal(a[k], b[k]) for k in a)


# One fault a round, each kind once, and never both clients of a round (seed 39, found by search). The faults
# arm follows the sweep's other 2-client arms (two-arms above, at least) in their Flower run, so its clients are
# warm: a healthy round takes about a second, and the slow client of round 2 sleeps past the 10 s timeout, which
# that round waits out; its late reply arrives during round 3 and must be ignored.
FAULTY = in_sweep(scenario(
    name="faults",
    seed=39,
    clients={"num_clients": 2, "timeout": 10},
    training={"rounds": 4},
    faults={"fraction": 0.4, "kinds": ["raise", "nan", "shape", "slow"], "slow_seconds": 15},
))


@pytest.mark.slow
def test_injected_faults_are_left_out_recorded_and_the_run_finishes(sweep: dict[str, Path]) -> None:
    run = sweep[FAULTY["name"]]
    arm = parse_scenario(FAULTY).arms["run"]
    injected = {(r, p): injected_fault(arm, p, r) for r in range(1, 5) for p in range(2)}
    expected = {key for key, kind in injected.items() if kind}
    assert sorted(kind for kind in injected.values() if kind) == ["nan", "raise", "shape", "slow"]
    rounds = read_jsonl(run / "arms" / "run" / "metrics.jsonl")
    recorded = {(row["round"], f["partition_id"]) for row in rounds for f in row["faults"]}
    assert recorded == expected
    # Each round aggregated its healthy reply alone (round 3 included, though round 2's late reply came in it).
    assert [row["aggregated"] for row in rounds] == [[p for p in range(2) if (r, p) not in expected] for r in range(1, 5)]
    audited = {(r.round, r.partition_id) for r in AuditStore(run).records() if r.status == "fault"}
    assert audited == expected
    weights = torch.load(run / "arms" / "run" / "final_weights.pt")
    assert all(torch.isfinite(t).all() for t in weights.values())
    # Faulty replies were never attacked: every audited attack is on a healthy update.
    attacked = {(r.round, r.partition_id) for r in AuditStore(run).records() if r.source == "server"}
    assert not attacked & expected


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_one_non_finite_value_anywhere_makes_a_reply_unusable(bad: float) -> None:
    expected = {"w": torch.Size([1000, 300]), "b": torch.Size([0]), "steps": torch.Size([2])}
    reply = {"w": torch.randn(1000, 300), "b": torch.empty(0), "steps": torch.tensor([1, 2])}
    assert reply_problem(reply, expected) is None
    for index in (0, 123_456, 299_999):
        broken = reply["w"].clone()
        broken.view(-1)[index] = bad
        assert reply_problem({**reply, "w": broken}, expected) == "non-finite values in w"
