"""Flower SuperLinks and the ``flwr`` CLI calls against them.

``flwr run`` with the default local connection leaves a detached SuperLink behind, and
exits 0 even when the ServerApp failed. ``FlowerConnection`` is the ``flwr`` CLI against one
connection (submit a run, read its real status and logs, wait for it);
``SimulationSuperLink`` starts its own simulation SuperLink (private FLWR_HOME, free port,
runtime dependency installation off) and stops every process it started;
``RemoteSuperLink`` talks to a running deployment SuperLink (``fedmjp deploy``).
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from .processes import console_script, free_port, kill_by_env, stop_group, venv_path

QUIET_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DEDUP_LOGS": "0",
}
# Flower's SuperExec looks for tasks (a ServerApp or ClientApp to start) every second by default;
# every message a SuperNode receives is such a task, so every message waited up to 1 s for it.
# 0.05 s costs a cheap local call 20 times a second per SuperExec. Set wherever a SuperLink or
# SuperNode starts (fedmjp simulate, the loopback deployment, docker-compose.yml).
FAST_POLL_ENV = {"FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.05"}
CONNECTION = "fedmjp"
# Seconds between status reads when a local hint says when to read (see FlowerConnection.wait),
# and between checks of the hint.
SLOW_POLL = 10.0
HINT_POLL = 0.25


@dataclass
class RunStatus:
    run_id: int
    status: str

    @property
    def finished(self) -> bool:
        return self.status.startswith("finished")

    @property
    def succeeded(self) -> bool:
        return self.status == "finished:completed"


class FlowerError(RuntimeError):
    """A Flower run or process failed; the message carries the server's error."""


class FlowerConnection:
    """The ``flwr`` CLI against one SuperLink connection of ``env["FLWR_HOME"]``/config.toml.

    Subclasses say whether the SuperLink is still there (``check_alive``) and own its life.
    """

    def __init__(self, connection: str, env: dict[str, str]) -> None:
        self.connection = connection
        self.env = env

    def flwr(self, *args: str, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run([console_script("flwr"), *args], env=self.env, capture_output=True, text=True, timeout=timeout)

    def _json(self, done: subprocess.CompletedProcess[str], what: str) -> dict:
        """The JSON reply of a ``--format json`` call (``flwr`` exits 0 on some failures)."""
        try:
            reply = json.loads(done.stdout)
        except json.JSONDecodeError:
            reply = {}
        if done.returncode != 0 or not reply.get("success", True) or not reply:
            message = reply.get("error-message") or (done.stdout + done.stderr).strip()
            raise FlowerError(f"{what} failed: {message[-2000:]}")
        return reply

    def start_run(self, app_dir: Path, run_config: Path, federation_config: str | None = None) -> int:
        """``flwr run``: build the app bundle of ``app_dir``, start a run; return its id."""
        args = ["run", str(app_dir), self.connection, "--run-config", str(run_config)]
        if federation_config:
            args += ["--federation-config", federation_config]
        reply = self._json(self.flwr(*args, "--format", "json"), "flwr run")
        if "run-id" not in reply:
            raise FlowerError(f"flwr run failed: no run id in {reply}")
        return int(reply["run-id"])

    def status(self, run_id: int) -> RunStatus:
        done = self.flwr("ls", self.connection, "--run-id", str(run_id), "--format", "json", timeout=60)
        try:
            runs = json.loads(done.stdout)["runs"]
        except (json.JSONDecodeError, KeyError):
            raise FlowerError(f"flwr ls failed: {(done.stdout + done.stderr).strip()[-2000:]}") from None
        return RunStatus(run_id, str(runs[0]["status"]))

    def logs(self, run_id: int) -> str:
        return self.flwr("log", str(run_id), self.connection, "--show", timeout=60).stdout

    def stop_run(self, run_id: int) -> None:
        """Ask the SuperLink to stop a run (best effort: the run may have finished)."""
        self.flwr("stop", str(run_id), self.connection, timeout=60)

    def nodes(self) -> list[dict]:
        """The SuperNodes the SuperLink knows (``flwr supernode ls``): node-id, status, ..."""
        reply = self._json(self.flwr("supernode", "ls", self.connection, "--format", "json", timeout=60),
                           "flwr supernode ls")
        return list(reply.get("nodes", []))

    def register_node(self, public_key: Path) -> int:
        """``flwr supernode register``: let a SuperNode with this key in; returns its node id."""
        reply = self._json(self.flwr("supernode", "register", str(public_key), self.connection, "--format", "json",
                                     timeout=60), "flwr supernode register")
        return int(reply["node-id"])

    def check_alive(self) -> None:
        """Raise FlowerError when the SuperLink is known to be gone."""

    def wait(self, run_id: int, on_poll: Callable[[], None] = lambda: None, interval: float = 2.0,
             timeout: float | None = None, finished_hint: Callable[[], bool] | None = None) -> RunStatus:
        """Poll the run's status until it finished; stop it and raise after ``timeout`` seconds.

        Every status read is a ``flwr`` process (about 0.8 s of CPU). With ``finished_hint`` (a cheap
        local sign that the run is ending) the status is read every ``SLOW_POLL`` seconds, and at
        once when the hint turns true: less CPU taken from the run, and its end seen sooner.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        every = interval if finished_hint is None else SLOW_POLL
        next_read = time.monotonic()
        while True:
            on_poll()
            if time.monotonic() >= next_read or (finished_hint is not None and finished_hint()):
                self.check_alive()
                status = self.status(run_id)
                if status.finished:
                    return status
                next_read = time.monotonic() + every
            if deadline is not None and time.monotonic() > deadline:
                self.stop_run(run_id)
                raise FlowerError(f"run {run_id} did not finish in {timeout:.0f} s (stopped; it was {status.status})")
            time.sleep(interval if finished_hint is None else HINT_POLL)


class SimulationSuperLink(FlowerConnection):
    """``flower-superlink --simulation`` on a free loopback port, as a context manager."""

    def __init__(self, work_dir: Path, ray_address: str | None = None, startup_timeout: float = 60.0) -> None:
        self.work_dir = work_dir
        self.port = free_port()
        self.flwr_home = Path(tempfile.mkdtemp(prefix="flwr-home-", dir=work_dir))
        # Ray's socket paths must be short: keep its temp dir at the top of /tmp.
        self.ray_tmp = Path(tempfile.mkdtemp(prefix="fedmjp-ray-"))
        env = {**os.environ, **QUIET_ENV, **FAST_POLL_ENV, "FLWR_HOME": str(self.flwr_home), "RAY_TMPDIR": str(self.ray_tmp),
               # The SuperLink spawns flower-superexec & co. by name: find this venv's first.
               "PATH": venv_path()}
        if ray_address:
            env["RAY_ADDRESS"] = ray_address
        super().__init__(CONNECTION, env)
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.flwr_home / "superlink.log"

    def __enter__(self) -> SimulationSuperLink:
        write_connection(self.flwr_home, CONNECTION, f"127.0.0.1:{self.port}")
        command = [
            console_script("flower-superlink"), "--insecure", "--simulation", "--host", "127.0.0.1",
            "--port", str(self.port), "--disable-runtime-dependency-installation",
        ]
        with open(self.log_path, "wb") as log:
            # A new session: stopping the group stops the ServerApp and Ray workers too.
            self.process = subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        try:
            wait_healthy(f"http://127.0.0.1:{self.port}/health", self.startup_timeout, self._starting)
        except BaseException:  # a failed start, Ctrl-C or SIGTERM: __exit__ will not run, stop it here
            self.stop()
            raise
        return self

    def _starting(self) -> None:
        if self.process.poll() is not None:
            raise FlowerError(f"flower-superlink exited with code {self.process.returncode}: {self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        return log_tail(self.log_path, lines)

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the SuperLink's process group, then SIGKILL what is left."""
        if self.process is not None:
            stop_group(self.process, timeout)
            self.process = None
        # Ray workers leave the SuperLink's process group; they all inherit our FLWR_HOME.
        kill_by_env("FLWR_HOME", str(self.flwr_home), timeout)
        shutil.rmtree(self.ray_tmp, ignore_errors=True)
        shutil.rmtree(self.flwr_home, ignore_errors=True)

    def submit(self, app_dir: Path, run_config: Path, num_supernodes: int, cpus: float, gpus: float) -> int:
        """Start a run; return its id."""
        federation = f"num-supernodes={num_supernodes} client-resources-num-cpus={cpus:g} " \
                     f"client-resources-num-gpus={gpus:g}"
        return self.start_run(app_dir, run_config, federation)

    def check_alive(self) -> None:
        if self.process is None or self.process.poll() is not None:
            raise FlowerError(f"the SuperLink stopped: {self.log_tail()}")


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
            self.private_home = Path(tempfile.mkdtemp(prefix="fedmjp-flwr-home-"))
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
        if self.private_home is not None:
            shutil.rmtree(self.private_home, ignore_errors=True)
            self.private_home = None


def write_connection(flwr_home: Path, name: str, address: str, root_certificates: Path | None = None,
                     insecure: bool = True) -> Path:
    """Write ``flwr_home/config.toml`` with one default connection; returns its path."""
    flwr_home.mkdir(parents=True, exist_ok=True)
    lines = ["[superlink]", f'default = "{name}"', "", f"[superlink.{name}]", f"address = {json.dumps(address)}"]
    if root_certificates is not None:
        lines.append(f"root-certificates = {json.dumps(str(Path(root_certificates).resolve()))}")
    elif insecure:
        lines.append("insecure = true")
    path = flwr_home / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def wait_healthy(url: str, timeout: float, check: Callable[[], None] = lambda: None,
                 verify: ssl.SSLContext | bool = True) -> None:
    """Poll a SuperLink's or SuperNode's ``/health`` until it answers; ``check`` may raise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        check()
        try:
            if httpx.get(url, timeout=0.5, verify=verify).is_success:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise FlowerError(f"{url} did not become healthy in {timeout:.0f} s")


def server_error(logs: str) -> str:
    """The last error line of a run's log (``flwr log``), the part a user needs."""
    lines = [line.strip() for line in logs.splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line or "Exception" in line or "ERROR" in line]
    return (errors or lines or ["no logs"])[-1][-500:]


def log_tail(path: Path, lines: int = 20) -> str:
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
