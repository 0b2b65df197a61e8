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

import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from ..errors import InputError
from ..federation.rundir import arm_dir, atomic_json, atomic_write, prepare_run_dir, read_jsonl
from ..federation.runconfig import RunPart, write_run_config
from ..scenario import Arm, Scenario
from .app_bundle import stage_app
from .flower_logs import server_error
from .flwr_cli import FlowerConnection, FlowerError
from .scratch import scratch
from .superlinks import RemoteSuperLink


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
    run_id = link.start_run(stage_app(work), write_run_config(work / f"run-config-{arm.name}.toml",
                                                               [RunPart(run_dir, [arm])]))
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
    with scratch("deploy") as tmp:
        for arm in scenario.arms.values():
            runs[arm.name] = run_arm(link, arm, out, tmp, progress, local, nodes_timeout, timeout)
            if local:
                rounds = read_jsonl(arm_dir(out, arm.name) / "metrics.jsonl")
                summary[arm.name] = rounds[-1] if rounds else {}
                atomic_json(out / "deploy.json", {"connection": link.connection, "runs": runs})
    if local:
        atomic_write(out / "summary.yaml", yaml.safe_dump(summary, sort_keys=True).encode())
    return {"run_dir": str(out), "runs": runs, "arms": summary}
