"""clients.launcher: what it relies on in Flower, and its hand-over from shim to forked task.

The launcher's whole path (a real SuperNode running real tasks through it) is exercised by every
loopback deployment (fedmjp/launch/loopback.py starts its SuperNodes through it, e.g. test_deploy.py).
"""

from __future__ import annotations

import inspect
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

from flwr.supercore.constant import TASK_TYPE_TO_COMMAND, TaskType
from flwr.supercore.superexec.executor import subprocess_executor

from clients.launcher import SOCKET_ENV, run_task, write_shim


def test_flower_starts_the_clientapp_by_name_from_path_without_waiting_for_it() -> None:
    assert TASK_TYPE_TO_COMMAND[TaskType.CLIENT_APP] == "flwr-clientapp"
    launch = inspect.getsource(subprocess_executor.SubprocessExecutor.launch)
    assert "TASK_TYPE_TO_COMMAND[spec.task_type]" in launch
    # Popen without wait() or communicate(): the shim may return as soon as the task is forked.
    assert "subprocess.Popen(" in launch and ".wait(" not in launch and ".communicate(" not in launch


def test_flowers_clientapp_entry_point_reads_sys_argv() -> None:
    pid = os.fork()
    if pid == 0:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        run_task(["--help"])  # argparse prints usage and exits 0: the arguments reached Flower
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    pid = os.fork()
    if pid == 0:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        run_task(["--no-such-flag"])
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 2


def test_the_shim_hands_its_arguments_over_and_reports_the_fork(tmp_path: Path) -> None:
    bin_dir = write_shim(tmp_path)
    path = tmp_path / "s.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen(1)
    received: list[str] = []

    def answer(reply: bytes) -> None:
        conn, _ = listener.accept()
        with conn:
            received.append(b"".join(iter(lambda: conn.recv(4096), b"")).decode())
            conn.sendall(reply)

    env = {**os.environ, SOCKET_ENV: str(path), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    for reply, code in ((b"1", 0), (b"", 1)):
        server = threading.Thread(target=answer, args=(reply,))
        server.start()
        done = subprocess.run(["flwr-clientapp", "--token", "t k", "--insecure"], env=env, timeout=30)
        server.join()
        assert done.returncode == code
    assert received == ["--token\0t k\0--insecure"] * 2
    listener.close()
    assert sys.executable in (bin_dir / "flwr-clientapp").read_text()
