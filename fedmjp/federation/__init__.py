"""The federation's arithmetic, independent of Flower: local training, a member's round, aggregation, faults, checkpoints and the run directory."""
