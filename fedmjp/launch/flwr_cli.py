"""One SuperLink connection: submit a run, read its real status and logs, wait for it.

A run is started, and its status read while it lasts, through Flower's own Control API client in this
process: a ``flwr ls`` process took 1.5 to 2.5 s beside a running simulation on 2 cores, CPU taken from
the run it watches, and a ``flwr run`` process 0.7 s before the run could start. A run's success is read
from its status (a started run may still fail in its ServerApp), and ``flwr`` exits 0 on some failed
calls: ``FlowerConnection`` reads the JSON replies and the run's status and raises ``FlowerError``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .processes import console_script

if TYPE_CHECKING:
    from flwr.cli.typing import SuperLinkConnection
    from flwr.supercore.control import ControlHttpClient


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


# Seconds between status reads of a run whose end shows locally (a simulation's last final weights).
STATUS_EVERY = 1.0


class FlowerError(RuntimeError):
    """A Flower run or process failed; the message carries the server's error."""


class FlowerConnection:
    """The ``flwr`` CLI against one SuperLink connection of ``env["FLWR_HOME"]``/config.toml.

    Subclasses say whether the SuperLink is still there (``check_alive``) and own its life.
    """

    def __init__(self, connection: str, env: dict[str, str]) -> None:
        self.connection = connection
        self.env = env
        self._control: ControlHttpClient | None = None
        self._connection: SuperLinkConnection | None = None

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
        """Build the app bundle of ``app_dir`` and start a run with these overrides, as ``flwr run`` does (with
        Flower's own functions), through this process's Control API client: a ``flwr run`` process cost about
        0.7 s of CPU and as long again before the run started. Returns the run's id."""
        from flwr.cli.build import build_fab_from_disk
        from flwr.cli.config_utils import load_and_validate
        from flwr.common.config import parse_config_args
        from flwr.common.serde import fab_to_proto, user_config_to_proto
        from flwr.proto.control_pb2 import StartRunRequest  # pylint: disable=no-name-in-module
        from flwr.supercore.fab import Fab
        from flwr.supercore.utils import simulation_config_from_json

        try:
            load_and_validate(app_dir / "pyproject.toml", check_module=False)
            fab = build_fab_from_disk(app_dir)
            overrides = parse_config_args([federation_config]) if federation_config else None
            request = StartRunRequest(
                fab=fab_to_proto(Fab(hashlib.sha256(fab).hexdigest(), fab, {})),
                override_config=user_config_to_proto(parse_config_args([str(run_config)])),
                federation=self.control_connection().federation or "",
                override_federation_config=(simulation_config_from_json(
                    {k.replace("-", "_"): v for k, v in overrides.items()}) if overrides else None))
            reply = self.control().StartRun(request)
        except Exception as exc:  # Flower's config checks and its transport raise their own errors
            raise FlowerError(f"flwr run failed: {exc}") from None
        if not reply.HasField("run_id"):
            raise FlowerError(f"flwr run failed: no run id in the SuperLink's reply ({reply})")
        return int(reply.run_id)

    def control_connection(self) -> SuperLinkConnection:
        """The connection's settings as ``flwr`` reads them from ``FLWR_HOME``/config.toml, once."""
        if self._connection is None:
            from flwr.cli.flower_config import read_superlink_connection

            # Flower's helper prints "Using SuperLink: ..." for people: not into this CLI's --json output.
            with flwr_home(self.env.get("FLWR_HOME")), redirect_stdout(io.StringIO()):
                self._connection = read_superlink_connection(self.connection)
        return self._connection

    def control(self) -> ControlHttpClient:
        """Flower's Control API client for this connection, made as ``flwr`` makes it (TLS, account
        auth), once."""
        if self._control is None:
            from flwr.cli.utils import init_http_client_from_connection

            with flwr_home(self.env.get("FLWR_HOME")), redirect_stdout(io.StringIO()):
                self._control = init_http_client_from_connection(self.control_connection())
        return self._control

    def close(self) -> None:
        if self._control is not None:
            self._control.close()
            self._control = None

    def status(self, run_id: int) -> RunStatus:
        """The run's status as ``flwr ls`` shows it (``status:sub-status``)."""
        from flwr.proto.control_pb2 import ListRunsRequest  # pylint: disable=no-name-in-module

        try:
            run = self.control().ListRuns(ListRunsRequest(run_id=run_id)).run_dict[run_id]
        except Exception as exc:  # the client raises its transport's and Flower's own errors
            raise FlowerError(f"reading the status of run {run_id} failed: {exc}") from None
        status = run.status.status
        return RunStatus(run_id, f"{status}:{run.status.sub_status}" if run.status.sub_status else status)

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

    def wait(self, run_id: int, on_poll: Callable[[], None] = lambda: None, interval: float = 0.25,
             timeout: float | None = None, written: Callable[[], bool] | None = None) -> RunStatus | None:
        """Poll the run's status until it finished; stop it and raise after ``timeout`` seconds.

        ``written``: a local sign that the ServerApp has written everything it will write; once it
        holds, None is returned at once instead of waiting for Flower to end the run (it shuts the
        simulation engine and its Ray actors down first: seconds that change nothing in the results).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        # With a local sign of the end, the status only tells a failure: read it once a second, not at every
        # poll (each read costs this process and the SuperLink CPU the run wants).
        every = STATUS_EVERY if written is not None else 0.0
        read_at = float("-inf")
        while True:
            on_poll()
            if written is not None and written():
                return None
            self.check_alive()
            if time.monotonic() - read_at >= every:
                status, read_at = self.status(run_id), time.monotonic()
                if status.finished:
                    return status
            if deadline is not None and time.monotonic() > deadline:
                self.stop_run(run_id)
                raise FlowerError(f"run {run_id} did not finish in {timeout:.0f} s (stopped; it was {status.status})")
            time.sleep(interval)


@contextmanager
def flwr_home(path: str | None) -> Iterator[None]:
    """FLWR_HOME set to ``path`` (when given) while Flower's CLI functions read it from the environment."""
    before = os.environ.get("FLWR_HOME")
    if path is not None:
        os.environ["FLWR_HOME"] = path
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("FLWR_HOME", None)
        else:
            os.environ["FLWR_HOME"] = before
