"""The ``flwr`` CLI against one SuperLink connection: submit a run, read its real status and logs, wait for it.

``flwr run`` exits 0 even when the ServerApp failed, and ``flwr`` exits 0 on some failed calls:
``FlowerConnection`` reads the JSON replies and the run's status and raises ``FlowerError``.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .processes import console_script

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
