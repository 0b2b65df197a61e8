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

import psutil


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


def _with_env(key: str, value: str) -> tuple[list[psutil.Process], list[psutil.Process]]:
    """Processes other than this one whose environment holds ``key=value``, and their descendants that do not
    show it (Ray's agents rename themselves over their environment: only their parent, the raylet, shows it)."""
    marked: dict[int, psutil.Process] = {}
    below: dict[int, psutil.Process] = {}
    for process in psutil.process_iter():
        if process.pid == os.getpid():
            continue
        try:
            if process.environ().get(key) == value:
                marked[process.pid] = process
                below.update((child.pid, child) for child in process.children(recursive=True))
        # Gone, a zombie (its environment is empty: a ZombieProcess is a NoSuchProcess) or not ours.
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return list(marked.values()), [p for pid, p in below.items() if pid not in marked and pid != os.getpid()]


def processes_with_env(key: str, value: str) -> list[int]:
    """Pids whose environment holds ``key=value``, and their descendants."""
    marked, below = _with_env(key, value)
    return [process.pid for process in marked + below]


def kill_by_env(key: str, value: str, timeout: float) -> None:
    """SIGTERM every process whose environment holds ``key=value``; SIGKILL after ``timeout`` s. Their
    descendants that do not show it are SIGKILLed at once: found only through a parent that is stopping, they
    would be lost with it (Ray's agents ignore SIGTERM for a minute)."""
    deadline = time.monotonic() + timeout
    # Scan again after each round of signals: a dying process may have started others.
    while True:
        marked, below = _with_env(key, value)
        if not marked and not below:
            return
        late = time.monotonic() > deadline
        for process in marked + below:
            try:
                (process.kill if late or process in below else process.terminate)()
            except psutil.NoSuchProcess:
                pass
        time.sleep(0.2)
