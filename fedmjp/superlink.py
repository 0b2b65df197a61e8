"""A private Flower SuperLink for one command, and the ``flwr`` CLI calls against it.

``flwr run`` with the default local connection leaves a detached SuperLink behind, and
exits 0 even when the ServerApp failed. This starts its own SuperLink (private FLWR_HOME,
free port, runtime dependency installation off), reads each run's real status, and stops
every process it started.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

QUIET_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DEDUP_LOGS": "0",
    "TIMM_FUSED_ATTN": "0",
}
CONNECTION = "fedmjp"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bin(name: str) -> str:
    """A console script of this environment (the venv running us), else from PATH."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else (shutil.which(name) or name)


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


class SimulationSuperLink:
    """``flower-superlink --simulation`` on a free loopback port, as a context manager."""

    def __init__(self, work_dir: Path, ray_address: str | None = None, startup_timeout: float = 60.0) -> None:
        self.work_dir = work_dir
        self.port = free_port()
        self.flwr_home = Path(tempfile.mkdtemp(prefix="flwr-home-", dir=work_dir))
        # Ray's socket paths must be short: keep its temp dir at the top of /tmp.
        self.ray_tmp = Path(tempfile.mkdtemp(prefix="fedmjp-ray-"))
        self.env = {**os.environ, **QUIET_ENV, "FLWR_HOME": str(self.flwr_home), "RAY_TMPDIR": str(self.ray_tmp),
                    # The SuperLink spawns flower-superexec & co. by name: find this venv's first.
                    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        if ray_address:
            self.env["RAY_ADDRESS"] = ray_address
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.flwr_home / "superlink.log"

    def __enter__(self) -> SimulationSuperLink:
        (self.flwr_home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
            f'address = "127.0.0.1:{self.port}"\ninsecure = true\n'
        )
        command = [
            _bin("flower-superlink"), "--insecure", "--simulation", "--host", "127.0.0.1",
            "--port", str(self.port), "--disable-runtime-dependency-installation",
        ]
        with open(self.log_path, "wb") as log:
            # A new session: stopping the group stops the ServerApp and Ray workers too.
            self.process = subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        self._wait_healthy()
        return self

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise FlowerError(f"flower-superlink exited with code {self.process.returncode}: {self.log_tail()}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=0.5).is_success:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise FlowerError(f"flower-superlink did not become healthy in {self.startup_timeout:.0f} s")

    def log_tail(self, lines: int = 20) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the SuperLink's process group, then SIGKILL what is left."""
        if self.process is not None:
            _stop_group(self.process, timeout)
            self.process = None
        # Ray workers leave the SuperLink's process group; they all inherit our FLWR_HOME.
        _kill_by_env("FLWR_HOME", str(self.flwr_home), timeout)
        shutil.rmtree(self.ray_tmp, ignore_errors=True)
        shutil.rmtree(self.flwr_home, ignore_errors=True)

    def flwr(self, *args: str, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run([_bin("flwr"), *args], env=self.env, capture_output=True, text=True, timeout=timeout)

    def submit(self, app_dir: Path, run_config: Path, num_supernodes: int, cpus: float, gpus: float) -> int:
        """Start a run; return its id."""
        federation = f"num-supernodes={num_supernodes} client-resources-num-cpus={cpus:g} " \
                     f"client-resources-num-gpus={gpus:g}"
        done = self.flwr("run", str(app_dir), CONNECTION, "--run-config", str(run_config),
                         "--federation-config", federation, "--format", "json")
        try:
            reply = json.loads(done.stdout)
        except json.JSONDecodeError:
            reply = {}
        if done.returncode != 0 or not reply.get("success", False) or "run-id" not in reply:
            raise FlowerError(f"flwr run failed: {(done.stdout + done.stderr).strip()[-2000:]}")
        return int(reply["run-id"])

    def status(self, run_id: int) -> RunStatus:
        done = self.flwr("ls", CONNECTION, "--run-id", str(run_id), "--format", "json", timeout=60)
        try:
            runs = json.loads(done.stdout)["runs"]
        except (json.JSONDecodeError, KeyError):
            raise FlowerError(f"flwr ls failed: {(done.stdout + done.stderr).strip()[-2000:]}") from None
        return RunStatus(run_id, str(runs[0]["status"]))

    def logs(self, run_id: int) -> str:
        return self.flwr("log", str(run_id), CONNECTION, "--show", timeout=60).stdout

    def wait(self, run_id: int, on_poll: Callable[[], None] = lambda: None, interval: float = 2.0) -> RunStatus:
        while True:
            if self.process is None or self.process.poll() is not None:
                raise FlowerError(f"the SuperLink stopped during run {run_id}: {self.log_tail()}")
            status = self.status(run_id)
            on_poll()
            if status.finished:
                return status
            time.sleep(interval)


def _stop_group(process: subprocess.Popen[bytes], timeout: float) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # the group may outlive its leader
    except ProcessLookupError:
        pass
    process.wait()


def processes_with_env(key: str, value: str) -> list[int]:
    """Pids whose environment holds ``key=value`` (Linux /proc)."""
    needle = f"{key}={value}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _kill_by_env(key: str, value: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    sig = signal.SIGTERM
    while pids := processes_with_env(key, value):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        if time.monotonic() > deadline:
            sig = signal.SIGKILL
        time.sleep(0.2)
