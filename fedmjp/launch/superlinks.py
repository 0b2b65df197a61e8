"""The SuperLinks the project runs against, each a ``FlowerConnection`` that owns its life.

``flwr run`` with the default local connection leaves a detached SuperLink behind;
``SimulationSuperLink`` starts its own simulation SuperLink (private FLWR_HOME, free port,
runtime dependency installation off) and, unless it joins one, a Ray cluster of its own beside it, and stops
every process it started.
``RemoteSuperLink`` talks to a running deployment SuperLink (``fedmjp deploy``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from .flower_config import CONNECTION, NO_PRESTART_ENV, QUIET_ENV, SIMULATION_POLL_ENV, write_connection
from .flower_logs import log_tail
from .flwr_cli import FlowerConnection, FlowerError
from .health import wait_healthy
from .processes import console_script, free_port, kill_by_env, stop_group, venv_path
from .scratch import scratch_dir


class SimulationSuperLink(FlowerConnection):
    """``flower-superlink --simulation`` on a free loopback port, as a context manager."""

    def __init__(self, work_dir: Path, ray_address: str | None = None, startup_timeout: float = 60.0) -> None:
        self.work_dir = work_dir
        self.port = free_port()
        self.flwr_home = Path(tempfile.mkdtemp(prefix="flwr-home-", dir=work_dir))
        env = {**os.environ, **QUIET_ENV, **SIMULATION_POLL_ENV, **NO_PRESTART_ENV, "FLWR_HOME": str(self.flwr_home),
               # The SuperLink spawns flower-superexec & co. by name: find this venv's first.
               "PATH": venv_path()}
        self.ray_address = ray_address
        # Without a cluster to join, its own, started beside the SuperLink: Ray's start (about 3.5 s on 2 cores,
        # mostly waiting on its processes) overlaps the SuperLink's and the ServerApp's, and every Flower run of
        # this SuperLink joins it through RAY_ADDRESS, as Flower joins any cluster.
        self.ray_port = None if ray_address else free_port()
        env["RAY_ADDRESS"] = ray_address or f"127.0.0.1:{self.ray_port}"
        # Our own cluster's temp dir, at the top of /tmp (Ray's socket paths must be short); a joined cluster keeps
        # its own, so none is made (one left by a killed run would stay behind empty).
        self.ray_tmp = None if ray_address else scratch_dir("ray")
        if self.ray_tmp is not None:
            env["RAY_TMPDIR"] = str(self.ray_tmp)
        super().__init__(CONNECTION, env)
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self.ray_head: subprocess.Popen[bytes] | None = None
        self.log_path = self.flwr_home / "superlink.log"
        self.ray_log_path = self.flwr_home / "ray-start.log"

    def __enter__(self) -> SimulationSuperLink:
        write_connection(self.flwr_home, CONNECTION, f"127.0.0.1:{self.port}")
        command = [
            console_script("flower-superlink"), "--insecure", "--simulation", "--host", "127.0.0.1",
            "--port", str(self.port), "--disable-runtime-dependency-installation",
        ]
        try:
            if self.ray_port is not None:
                self.ray_head = self._start_ray()
            with open(self.log_path, "wb") as log:
                # A new session: stopping the group stops the ServerApp and Ray workers too.
                self.process = subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                                start_new_session=True)
            wait_healthy(f"http://127.0.0.1:{self.port}/health", self.startup_timeout, self._starting)
        except BaseException:  # a failed start, Ctrl-C or SIGTERM: __exit__ will not run, stop it here
            self.stop()
            raise
        return self

    def _start_ray(self) -> subprocess.Popen[bytes]:
        """``ray start --head``, not waited for: it exits once the cluster is up, which a Flower run's driver
        waits for when it joins. Its processes carry this FLWR_HOME, so ``stop`` finds them."""
        # Its Ray Client server would take port 10001, which a second simulation's cluster on this machine wants too.
        command = [console_script("ray"), "start", "--head", f"--port={self.ray_port}", "--include-dashboard=false",
                   f"--ray-client-server-port={free_port()}", "--disable-usage-stats", f"--temp-dir={self.ray_tmp}"]
        with open(self.ray_log_path, "wb") as log:
            return subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)

    def _starting(self) -> None:
        if self.process.poll() is not None:
            raise FlowerError(f"flower-superlink exited with code {self.process.returncode}: {self.log_tail()}")
        self._check_ray()

    def _check_ray(self) -> None:
        if self.ray_head is not None and self.ray_head.poll() not in (None, 0):
            raise FlowerError(f"ray start exited with code {self.ray_head.returncode}: "
                              f"{log_tail(self.ray_log_path)}")

    def log_tail(self, lines: int = 20) -> str:
        return log_tail(self.log_path, lines)

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        # Left normally, every run's results are on disk and a graceful shut-down (1 to 6 s: Flower stops its
        # engine) has nothing left to keep: every process carrying our FLWR_HOME is killed at once, our Ray
        # cluster's included (it leaves nothing in /dev/shm; its temp dir is removed below). A cluster we
        # joined ends the job of a driver that is gone.
        self.stop(timeout=0.0 if exc_type is None else 20.0)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the SuperLink's process group, then SIGKILL what is left after ``timeout`` seconds."""
        self.close()
        if self.process is not None:
            stop_group(self.process, timeout)
            self.process = None
        if self.ray_head is not None:
            stop_group(self.ray_head, 0.0)  # still starting, or exited with the cluster up (its daemons below)
            self.ray_head = None
        # Ray workers leave the SuperLink's process group; they all inherit our FLWR_HOME.
        kill_by_env("FLWR_HOME", str(self.flwr_home), timeout)
        if self.ray_tmp is not None:
            shutil.rmtree(self.ray_tmp, ignore_errors=True)
        shutil.rmtree(self.flwr_home, ignore_errors=True)

    def submit(self, app_dir: Path, run_config: Path, num_supernodes: int, cpus: int, gpus: float) -> int:
        """Start a run; return its id."""
        federation = f"num-supernodes={num_supernodes} client-resources-num-cpus={cpus} " \
                     f"client-resources-num-gpus={gpus:g}"
        return self.start_run(app_dir, run_config, federation)

    def check_alive(self) -> None:
        if self.process is None or self.process.poll() is not None:
            raise FlowerError(f"the SuperLink stopped: {self.log_tail()}")
        self._check_ray()


class RemoteSuperLink(FlowerConnection):
    """A running deployment SuperLink: a named connection of ``$FLWR_HOME/config.toml``, or an
    address with its root certificate (written to a private FLWR_HOME). A context manager: it
    removes the private FLWR_HOME on exit; it never starts or stops the SuperLink."""

    def __init__(self, connection: str | None = None, address: str | None = None,
                 root_certificates: Path | None = None, insecure: bool = False) -> None:
        env = {**os.environ, **QUIET_ENV,
               "PATH": venv_path()}
        self.private_home: Path | None = None
        if address:
            self.private_home = scratch_dir("flwr-home")
            write_connection(self.private_home, CONNECTION, address, root_certificates, insecure)
            env["FLWR_HOME"] = str(self.private_home)
            connection = CONNECTION
        elif not connection:
            raise ValueError("a connection name or an address is needed")
        super().__init__(connection, env)
        self.address = address

    def __enter__(self) -> RemoteSuperLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
        if self.private_home is not None:
            shutil.rmtree(self.private_home, ignore_errors=True)
            self.private_home = None
