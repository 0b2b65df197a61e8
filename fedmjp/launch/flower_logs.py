"""Reading Flower's logs: the error a user needs, the last lines of a process's log."""

from __future__ import annotations

import re
from pathlib import Path


# The last line of a Python traceback: the exception's qualified name and its message.
RAISED = re.compile(r"^[A-Za-z_][\w.]*: ")


def server_error(logs: str) -> str:
    """The part of a run's log (``flwr log``) a user needs: what the last traceback raised, else the last
    error line (Flower logs its own exit code after the traceback)."""
    lines = [line.strip() for line in logs.splitlines() if line.strip()]
    tracebacks = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last)")]
    raised = [line for line in lines[tracebacks[-1]:] if RAISED.match(line)] if tracebacks else []
    errors = [line for line in lines if "Error" in line or "Exception" in line or "ERROR" in line]
    return (raised or errors or lines or ["no logs"])[-1][-500:]


def log_tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a process's log file; empty before the file exists."""
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
