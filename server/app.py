"""fedmjp ServerApp: finds the partitions, then runs each arm's rounds (``server.rounds``) and writes
the run directory.

Imports nothing heavy before the partitions are found: a federation too small for the scenario (a plain
``flwr run .`` on Flower's default 2 SuperNodes) is told so at once, before torch and timm load.
"""

from __future__ import annotations

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedmjp.federation.runconfig import run_arms_from_run_config

from .partitions import find_partitions

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the arms of the run config one after the other on the same nodes (an arm of N clients on the nodes of
    partitions 0..N-1)."""
    entries = list(run_arms_from_run_config(context.run_config).values())
    partitions = find_partitions(grid, max(entry.arm.clients.num_clients for entry in entries))
    from .rounds import run_arm  # torch, timm, the attacks: once the federation is known to fit

    for entry in entries:
        run_arm(grid, entry, partitions.first(entry.arm.clients.num_clients))
