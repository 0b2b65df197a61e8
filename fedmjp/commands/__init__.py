"""Sub-commands of ``fedmjp``; each module registers its commands on ``fedmjp.commands.app.app``."""

from . import attack, audit, check, deploy, results, simulate  # noqa: F401
from .app import app

__all__ = ["app"]
