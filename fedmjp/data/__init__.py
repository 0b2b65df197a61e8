"""Data sets (offline built-ins and real loaders) and client partitioners.

Import the module you need (``fedmjp.data.loading``, ``.partition``, ``.sources``): this package imports nothing,
so a torch-free part (what a source is, a partition query) stays free of torch.
"""
