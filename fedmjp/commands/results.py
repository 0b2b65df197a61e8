"""``fedmjp results``: the headline table and figures, privacy against accuracy, in one command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .app import app, fail, user_errors
from ..errors import InputError

SetOpt = Annotated[
    Optional[list[str]],
    typer.Option("--set", help="Override a field of every part (--set data.root=/data/cifar10) or of one "
                               "(--set privacy:training.rounds=2, --set accuracy:training.rounds=50, "
                               "--set realism:data.test_limit=50 for every cell of the grid); repeatable."),
]


@app.command("results")
@user_errors
def results(
    quick: Annotated[bool, typer.Option("--quick", help="The quick setting (about 29 minutes on 2 cores).")] = False,
    out_dir: Annotated[Path, typer.Option("--out", help="Where to write results.md, the figures and runs/.")] = Path(
        "results"),
    scenario: Annotated[
        Optional[Path], typer.Option("--scenario", help="Scenario file (default scenarios/results-cifar10.yaml).")
    ] = None,
    set_: SetOpt = None,
    arms: Annotated[
        Optional[str], typer.Option("--arms", help="Run only these arms (comma-separated; keep vit, the reference).")
    ] = None,
    seeds: Annotated[
        Optional[str], typer.Option("--seeds", help="Run the accuracy part once per seed, e.g. 0,1,2 (default: "
                                                    "the scenario's seeds); the privacy part runs on the first.")
    ] = None,
    report_only: Annotated[
        bool, typer.Option("--report-only", help="Do not run: rewrite the results from OUT/runs.")
    ] = False,
    parts: Annotated[
        Optional[str], typer.Option("--parts", help="Run only these parts (comma-separated: privacy, accuracy, "
                                                    "dishonest, detector, realism, secure, convergence) into OUT, "
                                                    "whose other parts may have run before (the grid starts from "
                                                    "the accuracy part's weights; convergence re-runs the privacy "
                                                    "part and some of the secure part's and the grid's cells with "
                                                    "4x the attacks' budgets).")
    ] = None,
    ray_address: Annotated[
        Optional[str], typer.Option("--ray-address", help="Join this Ray cluster (default: $RAY_ADDRESS).")
    ] = None,
) -> None:
    """Run the results scenario's privacy part (attacked FedSGD), accuracy part (FedAvg), dishonest server's
    part (imprint), the grid of where users train (batch size x FedSGD/FedAvg x init/trained), a check
    that the attacks converged (the privacy part and sampled cells of the grid at 4x the attacks' budgets) and
    what a server reads through secure aggregation (SecAgg+), then write
    OUT/results.md (leakage per arm and attack with test accuracy, recomputed from the run directories) and
    the figures."""
    from ..results import DEFAULT_SCENARIO, run_results, write_results
    from ..launch.flwr_cli import FlowerError
    from .simulate import parse_seeds

    if report_only:
        if quick or set_ or arms or scenario or seeds or parts:
            raise InputError("--report-only rewrites existing results: --quick, --set, --arms, --scenario, --seeds, "
                             "--parts do not apply")
        typer.echo(f"results: {write_results(out_dir)}")
        return
    selected = [a.strip() for a in arms.split(",") if a.strip()] if arms else None
    chosen_parts = [p.strip() for p in parts.split(",") if p.strip()] if parts is not None else None
    chosen_seeds = parse_seeds(seeds)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True)) as bar:
        tasks: dict[tuple[str, str], int] = {}

        def progress(part: str, arm: str, done: int, total: int) -> None:
            if (part, arm) not in tasks:
                tasks[part, arm] = bar.add_task(f"{part}: {arm}", total=total)
            bar.update(tasks[part, arm], completed=done)

        try:
            path = run_results(scenario or DEFAULT_SCENARIO, out_dir, "quick" if quick else "full", set_ or [],
                               selected, progress, ray_address, chosen_seeds, chosen_parts)
        except FlowerError as exc:
            fail(str(exc))
            raise typer.Exit(1) from None
    typer.echo(f"results: {path}")
