"""``fedmjp deploy``: every arm of a scenario against a running SuperLink with real SuperNodes.

The same ServerApp and ClientApp as in simulation, and the same audit: the ServerApp runs
beside the SuperLink (Flower's subprocess isolation) and writes the run directory there, so
``run-dir`` is a path on the **SuperLink's machine**. When that path is also reachable from
here (the same machine, or a volume shared with the SuperLink's container, as in
docker-compose.yml) this module writes the resolved scenario, versions and summary into it
and reads per-round progress from it; with ``local=False`` it writes nothing here.

Deployment differs from simulation in what it may do: the clients keep their ground truth
(``audit.store_ground_truth`` is refused), and the SuperNodes, with their partition ids in
their node config, must be running and online before a run starts.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from .errors import InputError
from .rundir import arm_dir, atomic_json, atomic_write, read_jsonl
from .runconfig import write_run_config
from .scenario import Arm, Scenario
from .superlink import (QUIET_ENV, FlowerConnection, FlowerError, RemoteSuperLink, _bin, _kill_by_env, _stop_group,
                        free_port, processes_with_env, server_error, wait_healthy)

APP_DIR = Path(__file__).resolve().parent.parent

# Called as (arm name, rounds done, rounds in all) whenever progress is polled.
Progress = Callable[[str, int, int], None]


def check_deployable(scenario: Scenario) -> None:
    """Refuse what only simulation may do (one-line InputError naming the field)."""
    for name, arm in scenario.arms.items():
        if arm.audit.store_ground_truth:
            raise InputError(
                f"arms.{name}.audit.store_ground_truth: true is simulation only; in deployment the "
                f"clients' images never leave them (--set audit.store_ground_truth=false)"
            )


def flwr_home() -> Path:
    """The FLWR_HOME the ``flwr`` CLI reads (``$FLWR_HOME``, else its default)."""
    from flwr.supercore.utils import get_flwr_home

    return Path(get_flwr_home())


def check_connection(name: str) -> None:
    """A named connection must exist in ``$FLWR_HOME/config.toml`` (one-line error otherwise)."""
    path = flwr_home() / "config.toml"
    try:
        connections = tomllib.loads(path.read_text()).get("superlink", {})
    except FileNotFoundError:
        raise InputError(f"--connection: {path} does not exist (or use --superlink ADDRESS)") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"--connection: {path} is not valid TOML ({exc})") from None
    if not isinstance(connections.get(name), dict):
        known = ", ".join(k for k, v in connections.items() if isinstance(v, dict)) or "none"
        raise InputError(f"--connection: no connection {name!r} in {path} (have: {known})")


def connect(connection: str | None = None, superlink: str | None = None, root_certificates: Path | None = None,
            insecure: bool = False) -> RemoteSuperLink:
    """A RemoteSuperLink from a named connection or an address (validated; use as a context manager)."""
    if bool(connection) == bool(superlink):
        raise InputError("give --connection NAME or --superlink ADDRESS (one of them)")
    if connection:
        if root_certificates or insecure:
            raise InputError("--root-certificates/--insecure go with --superlink; a named connection has its own")
        check_connection(connection)
        return RemoteSuperLink(connection=connection)
    if root_certificates and insecure:
        raise InputError("--insecure: no TLS, so no --root-certificates")
    if root_certificates and not Path(root_certificates).is_file():
        raise InputError(f"--root-certificates: {root_certificates} does not exist")
    return RemoteSuperLink(address=superlink, root_certificates=root_certificates, insecure=insecure)


def online_nodes(link: FlowerConnection) -> list[int]:
    return sorted(int(n["node-id"]) for n in link.nodes() if n.get("status") == "online")


def wait_for_nodes(link: FlowerConnection, needed: int, timeout: float, interval: float = 2.0) -> list[int]:
    """Wait until ``needed`` SuperNodes are online; raise FlowerError with what is there after ``timeout``."""
    deadline = time.monotonic() + timeout
    while len(online := online_nodes(link)) < needed:
        if time.monotonic() > deadline:
            raise FlowerError(
                f"only {len(online)} of the {needed} SuperNodes this scenario needs are online after "
                f"{timeout:.0f} s (start one per partition id 0..{needed - 1}, with a registered key)"
            )
        time.sleep(interval)
    return online


def run_arm(link: FlowerConnection, arm: Arm, run_dir: Path, work: Path, progress: Progress,
            local: bool, nodes_timeout: float, timeout: float | None) -> dict[str, Any]:
    """One arm as one Flower run; returns {run_id, status, seconds}. Stops the run if interrupted."""
    wait_for_nodes(link, arm.clients.num_clients, nodes_timeout)
    started = time.perf_counter()
    run_id = link.start_run(APP_DIR, write_run_config(work / f"run-config-{arm.name}.toml", [arm], run_dir))
    metrics = arm_dir(run_dir, arm.name) / "metrics.jsonl"

    def poll() -> None:
        if local:
            progress(arm.name, len(read_jsonl(metrics)), arm.training.rounds)

    try:
        status = link.wait(run_id, poll, timeout=timeout)
    except BaseException:
        link.stop_run(run_id)  # interrupted here: do not leave the run going on the SuperLink
        raise
    poll()
    if not status.succeeded:
        raise FlowerError(f"arm {arm.name}: run {run_id} {status.status}: {server_error(link.logs(run_id))}")
    return {"run_id": run_id, "status": status.status, "seconds": time.perf_counter() - started}


def prepare_run_dir(scenario: Scenario, out: Path) -> None:
    from .simulate import prepare_run_dir as prepare

    prepare(scenario, out)


def deploy(scenario: Scenario, out: Path, link: FlowerConnection, progress: Progress = lambda *_: None,
           local: bool = True, nodes_timeout: float = 120.0, timeout: float | None = None) -> dict[str, Any]:
    """Run every arm against ``link``; returns {"runs": {arm: run info}, "arms": {arm: last round}}.

    ``out`` is the run directory on the SuperLink's machine (made absolute here). With
    ``local`` it is also this machine's (or a shared volume): the scenario, versions and
    summary are written into it and progress is read from it.
    """
    check_deployable(scenario)
    out = out.absolute()
    if local:
        prepare_run_dir(scenario, out)
    runs: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="fedmjp-deploy-") as tmp:
        for arm in scenario.arms.values():
            runs[arm.name] = run_arm(link, arm, out, Path(tmp), progress, local, nodes_timeout, timeout)
            if local:
                rounds = read_jsonl(arm_dir(out, arm.name) / "metrics.jsonl")
                summary[arm.name] = rounds[-1] if rounds else {}
                atomic_json(out / "deploy.json", {"connection": link.connection, "runs": runs})
    if local:
        atomic_write(out / "summary.yaml", yaml.safe_dump(summary, sort_keys=True).encode())
    return {"run_dir": str(out), "runs": runs, "arms": summary}


class LoopbackDeployment:
    """A real deployment on this machine, for tests and benchmarks: a SuperLink (TLS, SuperNode
    authentication, state in a file) and one SuperNode per key, as processes on loopback.

    ``certs`` holds what ``scripts/make_certs.py`` writes (ca.crt, server.pem, server.key and
    ``supernode-K`` key pairs). Node ``K`` (1-based key) gets ``partition-id=K-1``. Every process
    gets its own FLWR_HOME under ``work``; ``stop()`` ends their process groups and anything
    left with those FLWR_HOMEs. A context manager.
    """

    def __init__(self, work: Path, certs: Path, startup_timeout: float = 60.0) -> None:
        self.work = work
        self.certs = certs
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.startup_timeout = startup_timeout
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.homes: list[Path] = []
        self.loggers: dict[str, threading.Thread] = {}
        self.base_env = {**os.environ, **QUIET_ENV,
                         "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}

    # -- processes -------------------------------------------------------------------------
    def _start(self, name: str, command: list[str]) -> subprocess.Popen[bytes]:
        home = self.work / f"home-{name}"
        home.mkdir(parents=True, exist_ok=True)
        self.homes.append(home)
        process = subprocess.Popen(command, env={**self.base_env, "FLWR_HOME": str(home)}, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, start_new_session=True, cwd=home)
        # Flower's log lines carry no time: stamp each (seconds since the epoch) for timing analyses.
        self.loggers[name] = threading.Thread(target=_stamp_lines, args=(process.stdout, self.work / f"{name}.log"),
                                              daemon=True)
        self.loggers[name].start()
        self.processes[name] = process
        return process

    def log(self, name: str, settle: float = 0.0) -> str:
        """A process's stamped log; ``settle``: wait up to that long for the rest of an exited one's output."""
        if settle and name in self.loggers:
            self.loggers[name].join(settle)
        path = self.work / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start_superlink(self) -> None:
        c = self.certs
        process = self._start("superlink", [
            _bin("flower-superlink"), "--ssl-ca-certfile", str(c / "ca.crt"), "--ssl-certfile", str(c / "server.pem"),
            "--ssl-keyfile", str(c / "server.key"), "--enable-supernode-auth", "--host", "127.0.0.1",
            "--port", str(self.port), "--database", str(self.work / "superlink-state.db"),
            "--disable-runtime-dependency-installation",
        ])

        def alive() -> None:
            if process.poll() is not None:
                raise FlowerError(f"flower-superlink exited with code {process.returncode}: {self.log('superlink')[-2000:]}")

        wait_healthy(f"https://{self.address}/health", self.startup_timeout, alive,
                     verify=ssl.create_default_context(cafile=str(c / "ca.crt")))

    def connection(self) -> RemoteSuperLink:
        return RemoteSuperLink(address=self.address, root_certificates=self.certs / "ca.crt")

    def register(self, key: int) -> int:
        """``flwr supernode register supernode-K.pub``; returns the node id."""
        with self.connection() as link:
            return link.register_node(self.certs / f"supernode-{key}.pub")

    def start_supernode(self, key: int, partition_id: int, num_partitions: int) -> subprocess.Popen[bytes]:
        return self._start(f"supernode-{key}", [
            _bin("flower-supernode"), "--superlink", self.address, "--root-certificates", str(self.certs / "ca.crt"),
            "--auth-supernode-private-key", str(self.certs / f"supernode-{key}"), "--port", str(free_port()),
            "--node-config", f"partition-id={partition_id} num-partitions={num_partitions}",
        ])

    def start(self, nodes: int) -> LoopbackDeployment:
        """SuperLink, register keys 1..nodes, start their SuperNodes, wait until all are online."""
        self.start_superlink()
        for key in range(1, nodes + 1):
            self.register(key)
        for key in range(1, nodes + 1):
            self.start_supernode(key, key - 1, nodes)
        with self.connection() as link:
            wait_for_nodes(link, nodes, self.startup_timeout, interval=0.5)
        return self

    def pids(self) -> list[int]:
        """Every live process with one of this deployment's FLWR_HOMEs (SuperExecs, app processes)."""
        return sorted({pid for home in self.homes for pid in processes_with_env("FLWR_HOME", str(home))})

    def stop_process(self, name: str, timeout: float = 20.0) -> None:
        process = self.processes.pop(name, None)
        if process is not None:
            _stop_group(process, timeout)

    def stop(self, timeout: float = 20.0) -> None:
        for name in [n for n in self.processes if n != "superlink"] + ["superlink"]:
            self.stop_process(name, timeout)
        for home in self.homes:
            _kill_by_env("FLWR_HOME", str(home), timeout)

    def __enter__(self) -> LoopbackDeployment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _stamp_lines(stream: Any, path: Path) -> None:
    with stream, open(path, "w") as log:
        for line in iter(stream.readline, b""):
            log.write(f"{time.time():.3f} {line.decode(errors='replace')}")
            log.flush()
