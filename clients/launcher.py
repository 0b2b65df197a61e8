"""A SuperNode whose ClientApp processes start warm.

    python -m clients.launcher [flower-supernode arguments]

Flower (>= 1.21) runs every message a SuperNode receives in a fresh ``flwr-clientapp`` process,
so each message pays the imports of torch, timm and the rest again (about 5 s on 2 cores, more
when two SuperNodes share them). This launcher imports those libraries once, starts
``flower-supernode`` with a ``flwr-clientapp`` of its own first on PATH, and runs each task in a
child forked from the warm process through Flower's own entry point. The app's code (``clients``,
``fedmjp``) is never imported here, so every task still loads the app bundle the SuperLink sent.

What this relies on in Flower 1.42, pinned by tests/test_launcher.py: the SuperExec starts the
ClientApp as ``flwr-clientapp`` looked up on PATH and does not wait for it
(flwr/supercore/superexec/executor/subprocess_executor.py), and
``flwr.supernode.cli.flwr_clientapp.flwr_clientapp`` reads its arguments from ``sys.argv``.
"""

from __future__ import annotations

import importlib
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

SOCKET_ENV = "FEDMJP_CLIENTAPP_SOCKET"
# What a training, evaluation or receipt task imports that costs seconds; the app's own packages
# are left out on purpose (they come from the app bundle).
WARM_MODULES = ("numpy", "torch", "torchvision", "timm", "scipy.optimize", "torchmetrics", "datasets",
                "flwr_datasets.partitioner", "skimage.data", "flwr.supernode.cli.flwr_clientapp")
APP_PACKAGES = ("clients", "fedmjp", "server")
# Stands in for Flower's ``flwr-clientapp``: hands its arguments to the launcher, waits for the fork.
SHIM = """#!{python} -IS
import os, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(os.environ["{env}"])
s.sendall("\\0".join(sys.argv[1:]).encode())
s.shutdown(socket.SHUT_WR)
sys.exit(0 if s.recv(1) == b"1" else 1)
"""


def warm_up() -> None:
    for module in WARM_MODULES:
        importlib.import_module(module)


def write_shim(directory: Path) -> Path:
    shim = directory / "flwr-clientapp"
    shim.write_text(SHIM.format(python=sys.executable, env=SOCKET_ENV))
    shim.chmod(0o755)
    return directory


def run_task(args: list[str]) -> None:
    """In a forked child: Flower's ClientApp entry point with these arguments; never returns."""
    code = 1
    try:
        for name in [m for m in sys.modules if m.split(".")[0] in APP_PACKAGES]:
            del sys.modules[name]
        from flwr.supernode.cli.flwr_clientapp import flwr_clientapp

        sys.argv = ["flwr-clientapp", *args]
        flwr_clientapp()
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else 1
    except BaseException:  # noqa: BLE001 - a task's failure must not reach the launcher's loop
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve(listener: socket.socket, supernode: subprocess.Popen[bytes]) -> set[int]:
    """Fork a child per task until the SuperNode exits; returns the children still running."""
    children: set[int] = set()
    while supernode.poll() is None:
        if select.select([listener], [], [], 0.2)[0]:
            conn, _ = listener.accept()
            with conn:
                request = b"".join(iter(lambda: conn.recv(65536), b"")).decode()
                args = request.split("\0") if request else []
                pid = os.fork()
                if pid == 0:
                    listener.close()
                    signal.signal(signal.SIGTERM, signal.SIG_DFL)
                    signal.signal(signal.SIGINT, signal.SIG_DFL)
                    run_task(args)
                children.add(pid)
                conn.sendall(b"1")
        children = {pid for pid in children if os.waitpid(pid, os.WNOHANG)[0] == 0}
    return children


def main(argv: list[str]) -> int:
    warm_up()
    supernode_command = shutil.which("flower-supernode", path=str(Path(sys.executable).parent)) or "flower-supernode"
    with tempfile.TemporaryDirectory(prefix="fedmjp-launcher-") as tmp:
        path = Path(tmp) / "clientapp.sock"
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(str(path))
        listener.listen(16)
        env = {**os.environ, SOCKET_ENV: str(path),
               "PATH": f"{write_shim(Path(tmp))}{os.pathsep}{os.environ.get('PATH', '')}"}
        supernode = subprocess.Popen([supernode_command, *argv], env=env)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda number, frame: supernode.send_signal(number))
        children = serve(listener, supernode)
        for pid in children:
            os.kill(pid, signal.SIGTERM)
        for pid in children:
            os.waitpid(pid, 0)
        listener.close()
    return supernode.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
