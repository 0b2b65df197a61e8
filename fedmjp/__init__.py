"""fedmjp: federated ViTs with Masked Jigsaw Puzzle position embeddings, and a leakage audit.

Importing the package imports nothing heavy (a partition query, the CLI's --help and ``fedmjp.protocol`` stay
free of torch); ``import fedmjp.models`` registers the models with timm.
"""

__version__ = "0.1.0"
