"""The run config that carries arms to the apps, and the client state kept per arm and round."""

from __future__ import annotations

import time
import tomllib
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, Metadata, RecordDict

from clients.context import arm_of, remember_round, round_batch
from fedmjp.federation.runconfig import (RunPart, arm_named, arms_from_run_config, run_arms_from_run_config, run_config,
                                         write_run_config)
from fedmjp.scenario import Arm, load_scenario
from fedmjp.federation.train import LocalResult
from fedmjp.federation.workload import ClientRound

QUICKSTART = Path(__file__).resolve().parent.parent / "scenarios" / "quickstart.yaml"


@pytest.fixture(scope="module")
def arms() -> list[Arm]:
    return list(load_scenario(QUICKSTART).arms.values())


def test_the_written_file_gives_back_the_same_arms_in_order(arms: list[Arm], tmp_path: Path) -> None:
    path = write_run_config(tmp_path / "run.toml", [RunPart(tmp_path / 'odd "dir"', arms, resume=True)])
    config = tomllib.loads(path.read_text())
    assert list(arms_from_run_config(config).values()) == arms
    entries = run_arms_from_run_config(config)
    assert list(entries) == [arm.name for arm in arms]  # one run directory: an arm's key is its name
    assert all(e.run_dir == str(tmp_path / 'odd "dir"') and e.resume for e in entries.values())


def test_arms_of_several_run_directories_keep_their_names_and_get_keys_of_their_own(arms: list[Arm],
                                                                                    tmp_path: Path) -> None:
    """A sweep's seeds (or several scenarios) in one Flower run: the same arm names, told apart on the wire."""
    config = tomllib.loads(write_run_config(tmp_path / "run.toml", [
        RunPart(tmp_path / "seed-0", arms), RunPart(tmp_path / "seed-1", arms[:1], resume=True)]).read_text())
    entries = run_arms_from_run_config(config)
    assert list(entries) == [f"0/{arm.name}" for arm in arms] + [f"1/{arms[0].name}"]
    assert [(e.arm, e.run_dir, e.resume) for e in entries.values()] == \
        [(arm, str(tmp_path / "seed-0"), False) for arm in arms] + [(arms[0], str(tmp_path / "seed-1"), True)]
    assert arm_named(config, f"1/{arms[0].name}") == arms[0]
    with pytest.raises(ValueError, match="is not in this run"):
        arm_named(config, arms[0].name)


def test_a_plain_flwr_run_names_a_scenario_file_and_one_arm(arms: list[Arm]) -> None:
    assert arms_from_run_config({"scenario": str(QUICKSTART), "arm": "mjp"}) == {"mjp": arms[1]}


def test_a_message_without_an_arm_belongs_only_to_a_one_arm_run(arms: list[Arm]) -> None:
    assert arm_named(run_config(arms[:1]), None) == arms[0]
    with pytest.raises(ValueError, match="names no arm and the run carries 2"):
        arm_named(run_config(arms), None)
    with pytest.raises(ValueError, match="arm 'nope' is not in this run"):
        arm_named(run_config(arms), "nope")


def _context(arms: list[Arm]) -> Context:
    return Context(run_id=1, node_id=1, node_config={"partition-id": 0}, state=RecordDict(),
                   run_config=run_config(arms))


def _message(key: str) -> Message:
    """A message naming the arm ``key`` as the ClientApp receives it (a server-side constructor needs a running
    ServerApp's identity)."""
    metadata = Metadata(run_id=1, message_id="m1", src_node_id=0, dst_node_id=1, reply_to_message_id="", group_id="",
                        created_at=time.time(), ttl=3600.0, message_type="query.receipt")
    return Message(content=RecordDict({"config": ConfigRecord({"arm": key, "round": 1})}), metadata=metadata)


def test_the_client_reads_the_arm_its_message_names(arms: list[Arm]) -> None:
    assert arm_of(_message("mjp"), _context(arms)) == arms[1]


def test_a_receipt_never_scores_against_another_arms_batch_of_the_same_round(arms: list[Arm]) -> None:
    context = _context(arms)
    batch = np.array([5, 2])
    result = LocalResult(kind="gradient", tensors={}, num_examples=2, loss=0.0, ce_loss=0.0, dal_loss=0.0, jigsaws=[None])
    first, second = (_message(arm.name) for arm in arms[:2])
    remember_round(context, first, 1, ClientRound(result, [batch]))
    indices, mask, steps = round_batch(context, first, 1)
    assert indices.tolist() == [5, 2] and mask is None and steps == [False]
    assert round_batch(context, second, 1) is None  # the next arm's round 1 is another batch
    assert round_batch(context, first, 2) is None
