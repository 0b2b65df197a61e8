"""Real Flower simulations on Ray, driven through the `fedmjp` command.

These start a real SuperLink, Ray and ClientApp actors (no mocks); each run takes tens of
seconds on 2 cores, so the scenarios are as small as a real federation can be.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from fedmjp.federation.rundir import read_jsonl

from .flower_runs import in_sweep, write_scenario

FEDMJP = [sys.executable, "-m", "fedmjp"]
pytestmark = pytest.mark.slow

TWO_MODES = in_sweep({
    "name": "two-modes",
    "seed": 1,
    "device": "cpu",
    "data": {"source": "photos", "test_limit": 80},
    "clients": {"num_clients": 3, "cpus": 1},
    "training": {"rounds": 4, "batch_size": 32, "server_optimizer": "adam", "server_lr": 0.003},
    "model": {"name": "vit_tiny_patch4_32", "kwargs": {"depth": 2}},
    "arms": {
        "fedsgd": {"training": {"mode": "fedsgd"}},
        "fedavg": {
            "training": {"mode": "fedavg", "local_steps": 4, "optimizer": "adam", "lr": 0.001,
                         "server_optimizer": "sgd", "server_lr": 1.0}
        },
    },
})


def fedmjp(*args: str, env: dict[str, str] | None = None, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FEDMJP, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def no_flower_processes_left(grace: float = 10.0) -> bool:
    """No SuperLink, flwr-simulation or ClientApp actor is left within ``grace`` seconds (a joined Ray
    cluster ends a finished job's actors a moment after the job's driver exits)."""
    deadline = time.monotonic() + grace
    while True:
        out = subprocess.run(["ps", "-eo", "stat=,args="], capture_output=True, text=True).stdout
        alive = [line for line in out.splitlines() if not line.startswith("Z")]
        if not any(k in line for line in alive for k in ("flower-superlink", "flwr-simulation", "ray::ClientApp")):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)


@pytest.fixture(scope="module")
def two_mode_run(sweep: dict[str, Path]) -> Path:
    return sweep[TWO_MODES["name"]]


def test_fedsgd_and_fedavg_federations_learn_above_chance(two_mode_run: Path) -> None:
    chance = 1 / 8  # eight photographs
    for arm in ("fedsgd", "fedavg"):
        rounds = read_jsonl(two_mode_run / "arms" / arm / "metrics.jsonl")
        assert [r["round"] for r in rounds] == [1, 2, 3, 4]
        assert all(r["clients"] == 3 for r in rounds)
        assert rounds[-1]["accuracy"] > 2 * chance, (arm, rounds)


def test_run_directory_keeps_scenario_versions_and_weights(two_mode_run: Path) -> None:
    resolved = yaml.safe_load((two_mode_run / "scenario.yaml").read_text())
    assert set(resolved["arms"]) == {"fedsgd", "fedavg"}
    assert resolved["arms"]["fedavg"]["training"]["local_steps"] == 4
    versions = json.loads((two_mode_run / "versions.json").read_text())
    assert versions["flwr"].startswith("1.42") and "torch" in versions
    for arm in ("fedsgd", "fedavg"):
        assert (two_mode_run / "arms" / arm / "final_weights.pt").stat().st_size > 0


def test_a_sweep_writes_each_scenario_into_a_run_directory_of_its_own(sweep: dict[str, Path]) -> None:
    """The suite's sweep (`fedmjp simulate A.yaml B.yaml ... --out OUT`): OUT/NAME per scenario, each a whole run
    directory of that scenario's arms, though arms of several scenarios shared Flower runs."""
    for name, run_dir in sweep.items():
        assert run_dir.name == name or len(sweep) == 1
        arms = set(yaml.safe_load((run_dir / "scenario.yaml").read_text())["arms"])
        assert set(yaml.safe_load((run_dir / "summary.yaml").read_text())) == arms
        assert {p.name for p in (run_dir / "arms").iterdir()} == arms
        for arm in arms:
            assert (run_dir / "arms" / arm / "final_weights.pt").is_file()


def test_nothing_is_left_running_after_simulate(two_mode_run: Path) -> None:
    assert no_flower_processes_left()


# The two-mode scenario's fedavg arm evaluated by the clients (each a shard of the held-out split).
ON_CLIENTS = in_sweep({**TWO_MODES, "name": "on-clients",
                       "arms": {"on-clients": {**TWO_MODES["arms"]["fedavg"], "data": {"evaluate_on": "clients"}}}})


@pytest.fixture(scope="module")
def fedavg_again(tmp_path_factory: pytest.TempPathFactory, ray_cluster: str) -> Path:
    """The two-mode scenario's fedavg arm alone in a Flower run of its own, on the suite's two-node cluster
    named the way Ray's own tools name one: ``RAY_ADDRESS`` in the environment."""
    tmp = tmp_path_factory.mktemp("again")
    again = {**TWO_MODES, "arms": {"fedavg": TWO_MODES["arms"]["fedavg"]}}
    done = fedmjp("simulate", str(write_scenario(tmp, again)), "--out", str(tmp / "run"), "--json",
                  env={"RAY_ADDRESS": ray_cluster})
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp / "run"


def test_same_seed_gives_the_same_metrics_alone_and_after_another_arm_in_the_same_run(
        two_mode_run: Path, fedavg_again: Path, sweep: dict[str, Path]) -> None:
    # The two-mode scenario runs both arms in one Flower run (same clients): fedavg there follows fedsgd
    # in the same ClientApp processes, and must not notice. Its twin evaluated by the clients (each a
    # shard of the held-out split) must see the accuracy the server sees.
    runs = [read_jsonl(run / "arms" / "fedavg" / "metrics.jsonl") for run in (two_mode_run, fedavg_again)]
    without_time = [[{k: v for k, v in r.items() if k != "seconds"} for r in rows] for rows in runs]
    assert without_time[0] == without_time[1] and len(without_time[0]) == 4
    on_clients = read_jsonl(sweep[ON_CLIENTS["name"]] / "arms" / "on-clients" / "metrics.jsonl")
    assert [r["evaluated_on"] for r in on_clients] == ["clients"] * 4
    assert all(r["evaluated_on"] == "server" for r in runs[0])
    for server, clients in zip(runs[0], on_clients):
        assert clients["accuracy"] == pytest.approx(server["accuracy"], abs=1e-9)
        assert clients["loss"] == pytest.approx(server["loss"], rel=1e-5)


def test_simulation_joins_a_two_node_ray_cluster(fedavg_again: Path, ray_cluster: str) -> None:
    import ray

    ray.init(address=ray_cluster, logging_level="ERROR")
    try:
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    finally:
        ray.shutdown()
    # fedavg_again's run found the cluster through RAY_ADDRESS alone (no --ray-address) and ran every round.
    assert len(read_jsonl(fedavg_again / "arms" / "fedavg" / "metrics.jsonl")) == 4
