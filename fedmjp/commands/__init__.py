"""Sub-commands of ``fedmjp``; each module registers its commands on ``fedmjp.commands.app.app``."""

# In the order of the workflow (``--help`` lists them as registered): validate and simulate, audit the run, attack
# one image, check weights, deploy, results.
from . import simulate  # noqa: F401, I001
from . import audit, attack, check, deploy, results  # noqa: F401
from .app import app

__all__ = ["app"]
