"""``fedmjp deploy``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .app import app, fail, user_errors
from ..errors import InputError
from ..scenario import load_scenario
from .simulate import ScenarioArg, SetOpt, default_out

out = Console()


@app.command("deploy")
@user_errors
def deploy(
    scenario: ScenarioArg,
    connection: Annotated[
        Optional[str],
        typer.Option("--connection", help="A SuperLink connection of $FLWR_HOME/config.toml (default ~/.flwr)."),
    ] = None,
    superlink: Annotated[
        Optional[str], typer.Option("--superlink", help="Or the SuperLink's address, HOST:PORT.")
    ] = None,
    root_certificates: Annotated[
        Optional[Path],
        typer.Option("--root-certificates", help="With --superlink: the CA certificate of the SuperLink's TLS."),
    ] = None,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="With --superlink: no TLS. For local testing only.")
    ] = False,
    out_dir: Annotated[
        Optional[Path],
        typer.Option(
            "--out",
            help="Run directory ON THE SUPERLINK'S MACHINE (its ServerApp writes metrics and the audit "
                 "there; made absolute here). Default runs/NAME-TIME. The scenario, versions and "
                 "summary are written into it from here too, so it must be the same path here (same "
                 "machine or a shared volume), unless --remote-out.",
        ),
    ] = None,
    remote_out: Annotated[
        bool,
        typer.Option("--remote-out", help="--out exists only on the SuperLink's machine: write and read nothing here."),
    ] = False,
    set_: SetOpt = None,
    nodes_timeout: Annotated[
        float, typer.Option("--nodes-timeout", help="Seconds to wait for enough SuperNodes to be online.")
    ] = 120.0,
    timeout: Annotated[
        Optional[float], typer.Option("--timeout", help="Stop an arm's run after this many seconds.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run ids and summary as one JSON object.")] = False,
) -> None:
    """Run every arm of SCENARIO against a running SuperLink and its SuperNodes.

    Each SuperNode holds one partition (node config `partition-id=K`); a scenario with
    clients.num_clients = N needs N of them online, partition ids 0..N-1. Start the SuperLink and
    SuperNodes with FLWR_SUPEREXEC_TASK_POLL_INTERVAL=0.05 in their environment (as
    docker-compose.yml does): every message starts a task, and Flower looks for tasks every 1 s.
    """
    from ..launch.deploy import check_deployable, connect
    from ..launch.deploy import deploy as run
    from ..launch.flwr_cli import FlowerError

    # The connection's arguments are checked first: a wrong one is one line without reading the scenario.
    with connect(connection, superlink, root_certificates, insecure) as link:
        loaded = load_scenario(scenario, set_ or [])
        check_deployable(loaded)
        run_dir = (out_dir or default_out(loaded.name)).absolute()
        local = not remote_out
        if local and run_dir.exists() and any(run_dir.iterdir()):
            raise InputError(f"--out: {run_dir} exists and is not empty")
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=Console(stderr=True), transient=as_json) as bar:
            tasks = {name: bar.add_task(f"arm {name}", total=arm.training.rounds)
                     for name, arm in loaded.arms.items()}
            try:
                result = run(loaded, run_dir, link, lambda arm, done, _: bar.update(tasks[arm], completed=done),
                             local=local, nodes_timeout=nodes_timeout, timeout=timeout)
            except FlowerError as exc:
                fail(str(exc))
                raise typer.Exit(1) from None
    if as_json:
        print(json.dumps(result))
        return
    table = Table(title=f"{loaded.name}: deployed, last round per arm")
    for column in ("arm", "run id", "rounds", "test top-1", "seconds/round"):
        table.add_column(column, justify="right" if column != "arm" else "left")
    for name, info in result["runs"].items():
        last = result["arms"].get(name, {})
        table.add_row(name, str(info["run_id"]), str(last.get("round", "-")),
                      f"{last.get('accuracy', float('nan')):.3f}", f"{last.get('seconds', float('nan')):.1f}")
    out.print(table)
    typer.echo(f"run directory (on the SuperLink's machine): {run_dir}")
