"""Reading Flower's logs: the error a user needs, the last lines of a process's log."""

from __future__ import annotations

from pathlib import Path


def server_error(logs: str) -> str:
    """The last error line of a run's log (``flwr log``), the part a user needs."""
    lines = [line.strip() for line in logs.splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line or "Exception" in line or "ERROR" in line]
    return (errors or lines or ["no logs"])[-1][-500:]


def log_tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a process's log file; empty before the file exists."""
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
