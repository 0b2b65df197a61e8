"""A real deployment on this machine (tests, scripts/deploy_timing.py, a researcher trying deployment): a SuperLink with
TLS and SuperNode authentication and one SuperNode per key, as processes on loopback."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .deploy import wait_for_nodes
from .flower_config import FAST_POLL_ENV, QUIET_ENV
from .flwr_cli import FlowerError
from .health import wait_healthy
from .processes import console_script, free_port, kill_by_env, processes_with_env, stop_group, venv_path
from .superlinks import RemoteSuperLink


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
        self.base_env = {**os.environ, **QUIET_ENV, **FAST_POLL_ENV, "PATH": venv_path()}

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
            console_script("flower-superlink"), "--ssl-ca-certfile", str(c / "ca.crt"), "--ssl-certfile", str(c / "server.pem"),
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

    def start_supernode(self, key: int, partition_id: int, num_partitions: int,
                        warm: bool = True) -> subprocess.Popen[bytes]:
        """``warm``: through clients.launcher, as the compose file does (ClientApp processes start warm); a
        node that will run no task (one the SuperLink refuses) is a plain flower-supernode, spared the warm-up."""
        start = [sys.executable, "-m", "clients.launcher"] if warm else [console_script("flower-supernode")]
        return self._start(f"supernode-{key}", [
            *start, "--superlink", self.address, "--root-certificates", str(self.certs / "ca.crt"),
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
            stop_group(process, timeout)

    def stop(self, timeout: float = 20.0) -> None:
        for name in [n for n in self.processes if n != "superlink"] + ["superlink"]:
            self.stop_process(name, timeout)
        for home in self.homes:
            kill_by_env("FLWR_HOME", str(home), timeout)

    def __enter__(self) -> LoopbackDeployment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _stamp_lines(stream: Any, path: Path) -> None:
    with stream, open(path, "w") as log:
        for line in iter(stream.readline, b""):
            log.write(f"{time.time():.3f} {line.decode(errors='replace')}")
            log.flush()
