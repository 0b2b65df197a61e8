"""The ``fedmjp`` Typer app every sub-command registers on, and how a command reports a user's error."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import typer

from .. import __version__
from ..errors import InputError

app = typer.Typer(
    name="fedmjp",
    help="Federated ViTs with Masked Jigsaw Puzzle position embeddings, and a gradient-leakage audit.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(asked: bool) -> None:
    if asked:
        typer.echo(f"fedmjp {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Federated ViTs with Masked Jigsaw Puzzle position embeddings, and a gradient-leakage audit."""


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
