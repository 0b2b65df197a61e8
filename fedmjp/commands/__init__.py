"""Sub-commands of ``fedmjp``; each module registers its commands on ``fedmjp.cli.app``."""

from . import attack, audit, deploy, results, simulate  # noqa: F401
