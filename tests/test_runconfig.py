"""The run config that carries arms to the apps, and the client state kept per arm and round."""

from __future__ import annotations

import time
import tomllib
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, Metadata, RecordDict

from clients.context import arm_of, remember_round, round_batch
from fedmjp.federation.runconfig import arm_named, arms_from_run_config, run_config, write_run_config
from fedmjp.scenario import Arm, load_scenario
from fedmjp.federation.train import LocalResult
from fedmjp.federation.workload import ClientRound

QUICKSTART = Path(__file__).resolve().parent.parent / "scenarios" / "quickstart.yaml"


@pytest.fixture(scope="module")
def arms() -> list[Arm]:
    return list(load_scenario(QUICKSTART).arms.values())


def test_the_written_file_gives_back_the_same_arms_in_order(arms: list[Arm], tmp_path: Path) -> None:
    path = write_run_config(tmp_path / "run.toml", arms, tmp_path / 'odd "dir"', resume=True)
    config = tomllib.loads(path.read_text())
    assert config["run-dir"] == str(tmp_path / 'odd "dir"') and config["resume"] is True
    assert list(arms_from_run_config(config).values()) == arms


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


def test_the_client_reads_the_arm_its_message_names(arms: list[Arm]) -> None:
    context = _context(arms)
    # As the ClientApp receives it (a server-side constructor needs a running ServerApp's identity).
    metadata = Metadata(run_id=1, message_id="m1", src_node_id=0, dst_node_id=1, reply_to_message_id="", group_id="",
                        created_at=time.time(), ttl=3600.0, message_type="query.receipt")
    msg = Message(content=RecordDict({"config": ConfigRecord({"arm": "mjp", "round": 1})}), metadata=metadata)
    assert arm_of(msg, context) == arms[1]


def test_a_receipt_never_scores_against_another_arms_batch_of_the_same_round(arms: list[Arm]) -> None:
    context = _context(arms)
    batch = np.array([5, 2])
    result = LocalResult(kind="gradient", tensors={}, num_examples=2, loss=0.0, ce_loss=0.0, dal_loss=0.0, jigsaws=[None])
    remember_round(context, arms[0], 1, ClientRound(result, [batch]))
    indices, mask, steps = round_batch(context, arms[0], 1)
    assert indices.tolist() == [5, 2] and mask is None and steps == [False]
    assert round_batch(context, arms[1], 1) is None  # the next arm's round 1 is another batch
    assert round_batch(context, arms[0], 2) is None
