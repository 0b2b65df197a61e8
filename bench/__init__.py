"""Benchmarks: each module has a ``main()``; ``python -m bench`` (``make bench``) runs them all."""
