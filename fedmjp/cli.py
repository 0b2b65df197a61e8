"""The ``fedmjp`` command. Sub-commands are thin: they parse, call the library, print."""

from __future__ import annotations

import signal
from types import FrameType

from .commands import app  # importing the package registers every sub-command

# Signals that end a run the way Ctrl-C does (see ``terminate``).
TERMINATING = (signal.SIGTERM, signal.SIGHUP)


def terminate(signum: int, frame: FrameType | None) -> None:
    """SIGTERM/SIGHUP: unwind like Ctrl-C, so ``with``/``finally`` stop the SuperLink, flwr-simulation and
    Ray workers we started (Python's default for these signals ends the interpreter and runs neither).
    SystemExit rather than KeyboardInterrupt: click passes it through, and 128+signum is the code a shell
    gives a process killed by that signal. A repeated signal is then ignored so as not to cut the clean-up
    short (it is bounded by its own timeouts; SIGKILL still ends it). A Python-level no-op rather than
    SIG_IGN: processes started during the clean-up must not inherit an ignored SIGTERM."""
    for sig in TERMINATING:
        if signal.getsignal(sig) is terminate:
            signal.signal(sig, lambda *_: None)
    raise SystemExit(128 + signum)


def main() -> None:
    for sig in TERMINATING:
        if signal.getsignal(sig) is not signal.SIG_IGN:  # `nohup fedmjp ...` keeps ignoring SIGHUP
            signal.signal(sig, terminate)
    app(prog_name="fedmjp")
