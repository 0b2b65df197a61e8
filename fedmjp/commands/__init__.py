"""Sub-commands of ``fedmjp``; each module registers its commands on ``fedmjp.cli.app``."""

from . import simulate  # noqa: F401
