"""Sub-commands of ``fedmjp``; each module registers its commands on ``fedmjp.cli.app``."""

from . import attack, audit, check, deploy, results, simulate  # noqa: F401
