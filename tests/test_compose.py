"""docker-compose.yml for real: a SuperLink and two SuperNodes in their own containers.

The set-up makes a Docker engine available (scripts/docker_engine.sh: Debian's docker.io and
docker-compose, dockerd without iptables or the default bridge) and builds the image offline
(scripts/docker_build.sh: debootstrap base, wheelhouse, legacy builder), both cached between
runs. Only where no engine can run at all (not root, no apt, dockerd refuses to start) do the
container tests skip, and they say why. Build and run times are printed (pytest -s, or -rA).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from fedmjp.launch.deploy import online_nodes, wait_for_nodes
from fedmjp.federation.rundir import read_jsonl
from fedmjp.launch.processes import free_port
from fedmjp.launch.flower_config import FAST_POLL_ENV
from fedmjp.launch.superlinks import RemoteSuperLink

from .flower_runs import scenario

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
IMAGE = os.environ.get("FEDMJP_TEST_IMAGE", "fedmjp:latest")

# First an arm under Flower's SecAgg+ (one round), then the arm the SuperNode stop interrupts (the arms run in the
# order of their names: the file is written with sorted keys).
SCENARIO = scenario(name="compose-smoke", training={"rounds": 3},
                    audit={"attacks": [{"name": "april"}], "clients": "all"},
                    arms={"aggregate": {"training": {"rounds": 1, "secure_aggregation": {"enabled": True}},
                                     "audit": {"attacks": [{"name": "ig", "options": {"steps": 2}}]}},
                          "run": {}})
TIMES: dict[str, float] = {}


def run(command: list[str], timeout: float, env: dict[str, str] | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env={**os.environ, **(env or {})})
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(command)} exited {done.returncode}: {(done.stdout + done.stderr)[-3000:]}")
    return done


def test_docker_compose_accepts_the_file() -> None:
    if shutil.which("docker-compose") is None:
        tools = run(["bash", "scripts/docker_engine.sh", "--tools"], timeout=300, check=False)
        if tools.returncode != 0:
            pytest.skip(f"docker-compose cannot be installed here: {tools.stderr.strip()[-300:]}")
    done = run(["docker-compose", "-f", str(COMPOSE), "config"], timeout=60,
               env={"FEDMJP_CERTS": "/certs-of-this-test"})
    config = yaml.safe_load(done.stdout)
    services = config["services"]
    assert {"superlink", "register", "supernode-1", "supernode-2", "deploy"} <= set(services)
    superlink = " ".join(services["superlink"]["command"])
    assert "--enable-supernode-auth" in superlink and "--ssl-certfile=/certs/server.pem" in superlink
    assert "--insecure" not in done.stdout
    for name in ("superlink", "supernode-1", "supernode-2"):  # the SuperExecs there poll for tasks quickly
        assert services[name]["environment"].items() >= FAST_POLL_ENV.items()
    for k, pid in ((1, 0), (2, 1)):
        node = " ".join(services[f"supernode-{k}"]["command"])
        assert f"--auth-supernode-private-key=/certs/supernode-{k}" in node and f"partition-id={pid}" in node
    assert any(v.endswith(":/state") or "/state" in str(v) for v in services["superlink"]["volumes"])


# -- the containers ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def engine() -> None:
    if sys.platform != "linux":
        pytest.skip("Docker containers need Linux")
    started = time.perf_counter()
    done = run(["bash", "scripts/docker_engine.sh"], timeout=600, check=False)
    if done.returncode != 0:
        pytest.skip(f"no Docker engine can run here: {done.stderr.strip()[-500:]}")
    TIMES["engine"] = time.perf_counter() - started


@pytest.fixture(scope="module")
def image(engine: None) -> str:
    started = time.perf_counter()
    done = run(["bash", "scripts/docker_build.sh", IMAGE], timeout=2400)
    TIMES["image"] = time.perf_counter() - started
    print(f"\n[compose] image: {TIMES['image']:.0f} s ({done.stderr.strip().splitlines()[-1]})")
    return IMAGE


class Compose:
    def __init__(self, folder: Path, image: str) -> None:
        self.folder = folder
        self.project = f"fedmjptest{os.getpid()}"
        self.port = free_port()
        self.env = {"FEDMJP_IMAGE": image, "FEDMJP_CERTS": str(folder / "certs"), "FEDMJP_RUNS": str(folder / "runs"),
                    "FEDMJP_SCENARIOS": str(folder / "scenarios"), "FEDMJP_SUPERLINK_PORT": str(self.port)}

    def __call__(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(["docker-compose", "-f", str(COMPOSE), "-p", self.project, *args], timeout, self.env, check)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(["docker-compose", "-f", str(COMPOSE), "-p", self.project, *args], cwd=ROOT,
                                env={**os.environ, **self.env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)

    def link(self) -> RemoteSuperLink:
        """The SuperLink as the host sees it (the published port, TLS with the test's CA)."""
        return RemoteSuperLink(address=f"127.0.0.1:{self.port}", root_certificates=self.folder / "certs" / "ca.crt")


@pytest.fixture(scope="module")
def compose(image: str, tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("compose")
    for sub in ("runs", "scenarios"):
        (folder / sub).mkdir()
    run([sys.executable, "scripts/make_certs.py", str(folder / "certs"), "--nodes", "2"], timeout=60)
    (folder / "scenarios" / "smoke.yaml").write_text(yaml.safe_dump(SCENARIO))
    up = Compose(folder, image)
    try:
        started = time.perf_counter()
        up("up", "-d", timeout=300)
        with up.link() as link:
            wait_for_nodes(link, 2, timeout=180, interval=1)
        TIMES["up"] = time.perf_counter() - started
        print(f"\n[compose] up with 2 SuperNodes online: {TIMES['up']:.1f} s")
        yield up
    finally:
        logs = up("logs", "--no-color", timeout=120, check=False)
        (folder / "compose.log").write_text(logs.stdout)
        up("down", "-v", "--remove-orphans", "-t", "20", timeout=300, check=False)
        print(f"\n[compose] times: {json.dumps({k: round(v, 1) for k, v in TIMES.items()})}")


@pytest.fixture(scope="module")
def deployed(compose: Compose) -> dict:
    """One deployment in containers: the SecAgg+ arm's round, then 3 rounds: both SuperNodes in rounds 1 and 2,
    then supernode-2 stopped, so partition 1 leaves during round 3 (one run for the tests: each costs about 50 s)."""
    run_dir = compose.folder / "runs" / "first"  # the host side of the volume
    metrics = run_dir / "arms" / "run" / "metrics.jsonl"
    started = time.perf_counter()
    runner = compose.popen("run", "--rm", "deploy", "scenarios/smoke.yaml", "--out", "runs/first", "--json")
    try:
        deadline = time.monotonic() + 900
        while len(read_jsonl(metrics)) < 2 and runner.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert len(read_jsonl(metrics)) == 2, "round 2 did not finish while the run was going"
        compose("stop", "-t", "10", "supernode-2", timeout=120)  # partition 1 leaves during round 3
        stopped = time.perf_counter()
        stdout, stderr = runner.communicate(timeout=900)
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.communicate()
    TIMES["run"] = time.perf_counter() - started
    TIMES["round after the stop"] = time.perf_counter() - stopped
    assert runner.returncode == 0, stderr[-3000:]
    result = json.loads(stdout.strip().splitlines()[-1])
    with compose.link() as link:  # the status the SuperLink keeps, read from the host
        status = link.status(result["runs"]["run"]["run_id"]).status
        online = len(online_nodes(link))
    compose("start", "supernode-2", timeout=120)
    return {"run_dir": run_dir, "result": result, "status": status, "online_after_stop": online,
            "rounds": read_jsonl(metrics), "records": read_jsonl(run_dir / "audit" / "records.jsonl")}


@pytest.mark.slow
def test_a_scenario_runs_in_containers_and_its_audit_lands_on_the_host(deployed: dict) -> None:
    assert deployed["result"]["runs"]["run"]["status"] == "finished:completed"
    assert deployed["status"] == "finished:completed"
    run_dir = deployed["run_dir"]
    rounds = deployed["rounds"][:2]  # before the stop
    assert [r["round"] for r in rounds] == [1, 2] and all(r["clients"] == 2 for r in rounds)
    records = [r for r in deployed["records"] if r["attack"] == "april" and r["round"] <= 2]
    assert sorted((r["round"], r["partition_id"]) for r in records) == [(1, 0), (1, 1), (2, 0), (2, 1)]
    assert all(r["status"] == "scored" and (run_dir / r["image"]).is_file() for r in records)
    assert (run_dir / "scenario.yaml").is_file() and (run_dir / "summary.yaml").is_file()


@pytest.mark.slow
def test_a_run_finishes_when_a_supernode_container_stops_in_the_middle(deployed: dict) -> None:
    rounds = deployed["rounds"]
    assert [r["round"] for r in rounds] == [1, 2, 3]
    # The adversary sees (and aggregation uses) only the updates that arrived: round 3 had one.
    audited = [r for r in deployed["records"] if r["attack"] == "april" and r["round"] == 3]
    assert [r["partition_id"] for r in audited] == [0]
    assert rounds[2]["clients"] == 1
    assert [f["partition_id"] for f in rounds[2].get("faults", [{"partition_id": 1}])] == [1]
    assert deployed["online_after_stop"] == 1



@pytest.mark.slow
def test_an_arm_runs_with_secure_aggregation_on_the_supernodes(deployed: dict) -> None:
    assert deployed["result"]["runs"]["aggregate"]["status"] == "finished:completed"
    [row] = read_jsonl(deployed["run_dir"] / "arms" / "aggregate" / "metrics.jsonl")
    assert row["secure_aggregation"]["clients"] == 2 and row["aggregated"] == [0, 1]
    attacked = [r for r in deployed["records"] if r["arm"] == "aggregate"]
    # The server attacked the aggregate; each SuperNode scored it against its own example.
    assert sorted(r["partition_id"] for r in attacked) == [0, 1]
    assert all(r["attack"] == "ig" and r["status"] == "scored" and r["threat_model"]["aggregate"] == "secagg+"
               for r in attacked)
