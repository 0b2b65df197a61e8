"""The Flower ClientApp of fedmjp (thin glue around fedmjp.federation.workload)."""
