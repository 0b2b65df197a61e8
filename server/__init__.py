"""The Flower ServerApp of fedmjp: strategy, adversary tap, round loop (thin glue)."""
