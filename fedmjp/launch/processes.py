"""Processes the project starts and must stop: Flower's console scripts, their process groups,
and the children that leave a group (found by a marker in their environment).

Flower starts processes of its own (SuperExec, ServerApp and ClientApp processes, Ray workers)
that outlive the one we started, so stopping ends the group and then anything still carrying
the marker we gave the group (a private ``FLWR_HOME``).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def console_script(name: str) -> str:
    """A console script of this environment (the venv running us), else from PATH."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else (shutil.which(name) or name)


def venv_path() -> str:
    """PATH with this environment's scripts first (Flower starts its helpers by name)."""
    return f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"


def stop_group(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM a process started with ``start_new_session=True`` and its group; SIGKILL what is
    left after ``timeout`` seconds (the group may outlive its leader)."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
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


def kill_by_env(key: str, value: str, timeout: float) -> None:
    """SIGTERM every process whose environment holds ``key=value``; SIGKILL after ``timeout`` s."""
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
