"""How much a reconstruction recovers: per-image and per-batch leakage metrics."""
