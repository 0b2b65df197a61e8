"""fedmjp: federated ViTs with Masked Jigsaw Puzzle position embeddings, and a leakage audit."""

from . import models  # noqa: F401  (registers the models with timm)

__version__ = "0.1.0"
