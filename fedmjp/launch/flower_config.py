"""What Flower's processes read: the environment they run in and the connection config of a FLWR_HOME."""

from __future__ import annotations

from pathlib import Path

import tomli_w

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
# A simulation's SuperExec has one task a Flower run (start flwr-simulation, which then runs every message
# itself): polling 20 times a second, the SuperLink and the SuperExec took 10.2 s of CPU in a 90 s run on
# 2 cores (4.5 s at 0.25 s), CPU the run's clients wanted. 0.25 s delays a run's start by 0.1 s on average.
SIMULATION_POLL_ENV = {"FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.25"}
# A raylet starts a worker per CPU when a driver connects (Ray's prestart_worker_first_driver), before it knows
# the driver's runtime environment; Flower's simulation sets one (PYTHONPATH), so its actors need workers of their
# own and the prestarted ones idle until they are reaped: on 2 cores, 2 wasted Python starts per run (ci-smoke
# through Flower: 19.1 to 20.0 s without them against 19.8 to 21.5 s with, alternating runs). Set where a raylet
# starts (a simulation's own Ray, the suite's cluster).
NO_PRESTART_ENV = {"RAY_prestart_worker_first_driver": "0"}
# The name of the one connection written into a private FLWR_HOME.
CONNECTION = "fedmjp"


def write_connection(flwr_home: Path, name: str, address: str, root_certificates: Path | None = None,
                     insecure: bool = True) -> Path:
    """Write ``flwr_home/config.toml`` with one default connection; returns its path."""
    connection: dict[str, str | bool] = {"address": address}
    if root_certificates is not None:
        connection["root-certificates"] = str(Path(root_certificates).resolve())
    elif insecure:
        connection["insecure"] = True
    flwr_home.mkdir(parents=True, exist_ok=True)
    path = flwr_home / "config.toml"
    path.write_text(tomli_w.dumps({"superlink": {"default": name, name: connection}}))
    return path
