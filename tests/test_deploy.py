"""`fedmjp deploy` against a real deployment on this machine, without Docker.

A SuperLink with TLS and SuperNode authentication and two SuperNodes run as processes on
loopback (certificates and keys from scripts/make_certs.py); a third SuperNode with a key the
SuperLink never registered must be refused. The slow fixture does all of it once.
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

from fedmjp.launch.deploy import online_nodes
from fedmjp.federation.rundir import read_jsonl

from .flower_runs import scenario
from fedmjp.launch.loopback import LoopbackDeployment

ROOT = Path(__file__).resolve().parent.parent
FEDMJP = [sys.executable, "-m", "fedmjp"]

# The dishonest server plants weights for partition 0 in round 2: deployment runs the same round as simulation.
SCENARIO = scenario(name="deploy-smoke", audit={
    "attacks": [{"name": "april"}], "clients": "all",
    "server": {"kind": "imprint", "rounds": [2], "clients": [0], "images": {"count": 32}}})


def write_scenario(folder: Path, scenario: dict) -> Path:
    path = folder / "scenario.yaml"
    path.write_text(yaml.safe_dump(scenario))
    return path


def fedmjp(*args: str, env: dict[str, str] | None = None, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FEDMJP, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`fedmjp ARGS` in this process (the same app, exit code and streams, without a new interpreter's 4 s of
    imports): for what is refused before anything connects."""
    from typer.testing import CliRunner

    import fedmjp.commands  # noqa: F401  (registers the sub-commands)
    from fedmjp.cli import app

    result = CliRunner().invoke(app, list(args), env=env)
    return subprocess.CompletedProcess(list(args), result.exit_code, result.stdout, result.stderr)


def make_certs(out: Path, nodes: int) -> Path:
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_certs.py"), str(out), "--nodes", str(nodes)],
                   check=True, capture_output=True, timeout=60)
    return out


# -- fast: what deployment refuses, before it connects to anything -----------------------------

def test_ground_truth_storage_is_refused_in_deployment(tmp_path: Path) -> None:
    scenario = {**SCENARIO, "audit": {**SCENARIO["audit"], "store_ground_truth": True}}
    done = cli("deploy", str(write_scenario(tmp_path, scenario)), "--superlink", "127.0.0.1:9", "--insecure",
               "--out", str(tmp_path / "run"))
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "audit.store_ground_truth" in done.stderr
    assert not (tmp_path / "run").exists()


def test_an_unknown_connection_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "config.toml").write_text('[superlink]\ndefault = "a"\n\n[superlink.a]\naddress = "x:1"\n')
    done = cli("deploy", str(write_scenario(tmp_path, SCENARIO)), "--connection", "nope",
               env={"FLWR_HOME": str(tmp_path / "home")})
    assert done.returncode == 2 and "no connection 'nope'" in done.stderr and "(have: a)" in done.stderr
    assert "Traceback" not in done.stderr


def test_connection_or_address_but_not_both(tmp_path: Path) -> None:
    done = cli("deploy", str(write_scenario(tmp_path, SCENARIO)), "--connection", "a", "--superlink", "h:1")
    assert done.returncode == 2 and "one of them" in done.stderr


def test_certificates_name_the_superlink_and_node_keys_are_nist_p384(tmp_path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    certs = make_certs(tmp_path / "certs", nodes=2)
    server = x509.load_pem_x509_certificate((certs / "server.pem").read_bytes())
    ca = x509.load_pem_x509_certificate((certs / "ca.crt").read_bytes())
    server.verify_directly_issued_by(ca)
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"superlink", "localhost"} <= set(sans.get_values_for_type(x509.DNSName))
    assert "127.0.0.1" in {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    for k in (1, 2):
        public = serialization.load_ssh_public_key((certs / f"supernode-{k}.pub").read_bytes())
        assert isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name == "secp384r1"
        assert (certs / f"supernode-{k}").stat().st_mode & 0o077 == 0  # private keys owner-only
    assert (certs / "server.key").stat().st_mode & 0o077 == 0


# -- slow: a real deployment -------------------------------------------------------------------

@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Start SuperLink + 2 registered SuperNodes, deploy the scenario, try an unregistered
    SuperNode, stop everything; return what each test checks."""
    tmp = tmp_path_factory.mktemp("deploy")
    certs = make_certs(tmp / "certs", nodes=3)  # key 3 is never registered
    facts: dict = {"tmp": tmp}
    deployment = LoopbackDeployment(tmp / "work", certs)
    (tmp / "work").mkdir()
    try:
        started = time.perf_counter()
        deployment.start(nodes=2)
        facts["startup_seconds"] = time.perf_counter() - started
        started = time.perf_counter()
        done = fedmjp("deploy", str(write_scenario(tmp, SCENARIO)), "--superlink", deployment.address,
                      "--root-certificates", str(certs / "ca.crt"), "--out", str(tmp / "run"), "--json",
                      "--timeout", "1200", timeout=1500)
        facts["deploy_seconds"] = time.perf_counter() - started
        assert done.returncode == 0, done.stderr[-3000:]
        facts["result"] = json.loads(done.stdout)
        with deployment.connection() as link:
            facts["status"] = {arm: link.status(run["run_id"]).status for arm, run in facts["result"]["runs"].items()}
            facts["flwr_ls"] = json.loads(link.flwr("ls", link.connection, "--format", "json").stdout)
            registered = online_nodes(link)
            intruder = deployment.start_supernode(3, partition_id=2, num_partitions=3, warm=False)
            try:
                facts["intruder_exit"] = intruder.wait(timeout=120)
            except subprocess.TimeoutExpired:
                facts["intruder_exit"] = None
            facts["intruder_log"] = deployment.log("supernode-3", settle=15)
            facts["nodes_before"], facts["nodes_after"] = registered, sorted(int(n["node-id"]) for n in link.nodes())
    finally:
        deployment.stop()
        facts["left_over"] = deployment.pids()
    return facts


@pytest.mark.slow
def test_deployed_scenario_runs_two_rounds_on_both_supernodes(deployed: dict) -> None:
    rounds = read_jsonl(deployed["tmp"] / "run" / "arms" / "run" / "metrics.jsonl")
    assert [r["round"] for r in rounds] == [1, 2]
    assert all(r["clients"] == 2 for r in rounds)
    assert (deployed["tmp"] / "run" / "arms" / "run" / "final_weights.pt").stat().st_size > 0
    resolved = yaml.safe_load((deployed["tmp"] / "run" / "scenario.yaml").read_text())
    assert resolved["arms"]["run"]["audit"]["attacks"][0]["name"] == "april"


@pytest.mark.slow
def test_deployed_audit_scores_april_on_every_update_by_client_receipts(deployed: dict) -> None:
    records = read_jsonl(deployed["tmp"] / "run" / "audit" / "records.jsonl")
    april = [r for r in records if r["attack"] == "april"]
    # Round 2's reply from partition 0 answered planted weights: imprint's, not april's.
    assert sorted((r["round"], r["partition_id"]) for r in april) == [(1, 0), (1, 1), (2, 1)]
    assert all(r["status"] == "scored" and r["metrics"]["psnr"] > 30 for r in april), april  # a ViT leaks
    # Ground truth stays on the clients: reconstructions are stored, true images are not.
    assert all(r.get("truth_image") in (None, "") for r in april)
    assert all((deployed["tmp"] / "run" / r["image"]).exists() for r in april)


@pytest.mark.slow
def test_deployed_dishonest_round_is_attacked_as_malicious_and_left_out_of_the_aggregate(deployed: dict) -> None:
    records = read_jsonl(deployed["tmp"] / "run" / "audit" / "records.jsonl")
    [imprint] = [r for r in records if r["attack"] == "imprint"]
    assert (imprint["round"], imprint["partition_id"], imprint["status"]) == (2, 0, "scored")
    # Two-block test model, one binning block: measured 0.78 of the 64 patches read exactly.
    assert imprint["threat_model"]["server"] == "malicious" and imprint["metrics"]["patches_exact"] >= 0.6
    rounds = read_jsonl(deployed["tmp"] / "run" / "arms" / "run" / "metrics.jsonl")
    assert [r["aggregated"] for r in rounds] == [[0, 1], [1]]


@pytest.mark.slow
def test_run_status_comes_from_flwr_ls(deployed: dict) -> None:
    run_id = deployed["result"]["runs"]["run"]["run_id"]
    assert deployed["status"] == {"run": "finished:completed"}
    listed = {int(r["run-id"]): r["status"] for r in deployed["flwr_ls"]["runs"]}
    assert listed[run_id] == "finished:completed"


@pytest.mark.slow
def test_an_unregistered_supernode_is_refused(deployed: dict) -> None:
    assert deployed["intruder_exit"] not in (None, 0), deployed["intruder_log"][-2000:]
    assert "Failed to activate SuperNode" in deployed["intruder_log"]
    assert deployed["nodes_after"] == deployed["nodes_before"] and len(deployed["nodes_before"]) == 2


@pytest.mark.slow
def test_no_flower_process_is_left_after_the_deployment(deployed: dict) -> None:
    assert deployed["left_over"] == []
    out = subprocess.run(["ps", "-eo", "stat=,args="], capture_output=True, text=True).stdout
    ours = str(deployed["tmp"])
    assert not [line for line in out.splitlines() if not line.startswith("Z") and ours in line]
