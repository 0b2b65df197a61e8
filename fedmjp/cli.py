"""The ``fedmjp`` command. Sub-commands are thin: they parse, call the library, print."""

from __future__ import annotations

import functools
import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

import typer

from .errors import InputError

app = typer.Typer(
    name="fedmjp",
    help="Federated ViTs with Masked Jigsaw Puzzle position embeddings, and a gradient-leakage audit.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def fail(message: str) -> None:
    """One unwrapped line on stderr (rich would wrap it at the terminal width)."""
    typer.echo(f"error: {message}", err=True)


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn input errors into one line on stderr and exit code 2 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (InputError, FileNotFoundError) as exc:
            fail(str(exc))
            raise typer.Exit(2) from None

    return wrapper


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
    # Commands register themselves on import; keep imports lazy for a fast --help.
    from . import commands  # noqa: F401

    for sig in TERMINATING:
        if signal.getsignal(sig) is not signal.SIG_IGN:  # `nohup fedmjp ...` keeps ignoring SIGHUP
            signal.signal(sig, terminate)
    app(prog_name="fedmjp")
