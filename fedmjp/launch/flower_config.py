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
