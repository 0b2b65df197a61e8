"""``fedmjp simulate`` and ``fedmjp validate``."""

from __future__ import annotations

import datetime as dt
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

out = Console()

ScenarioArg = Annotated[Path, typer.Argument(help="Scenario YAML file.", show_default=False)]
SetOpt = Annotated[
    Optional[list[str]],
    typer.Option("--set", help="Override a field: --set training.rounds=5 (repeatable; VALUE is YAML)."),
]


@app.command("validate")
@user_errors
def validate(scenario: ScenarioArg, set_: SetOpt = None) -> None:
    """Check a scenario file, and that its data splits among the clients as asked, without running it."""
    loaded = load_scenario(scenario, set_ or [])
    from ..launch.simulate import check_data

    check_data(loaded, loaded.seeds)
    typer.echo(f"{scenario}: valid ({len(loaded.arms)} arm(s): {', '.join(loaded.arms)})")


def default_out(name: str) -> Path:
    return Path("runs") / f"{name}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"


@app.command("simulate")
@user_errors
def simulate(
    scenario: Annotated[Optional[Path], typer.Argument(help="Scenario YAML file.", show_default=False)] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Run directory (default runs/NAME-TIME).")] = None,
    resume: Annotated[
        Optional[Path],
        typer.Option("--resume", help="Continue this run directory from its last complete round.", show_default=False),
    ] = None,
    set_: SetOpt = None,
    ray_address: Annotated[
        Optional[str], typer.Option("--ray-address", help="Join this Ray cluster (default: $RAY_ADDRESS).")
    ] = None,
    seeds: Annotated[
        Optional[str], typer.Option("--seeds", help="Run every arm once per seed, e.g. 0,1,2 (replaces the "
                                                    "scenario's seeds); each seed in OUT/seed-S.")
    ] = None,
    in_process: Annotated[
        bool, typer.Option("--in-process", help="Run the rounds in this process, without Flower or Ray (a "
                                                "curious server's attacks, but no planting server, DP, guard or "
                                                "faults): for a machine without them.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as one JSON object.")] = False,
) -> None:
    """Run every arm of SCENARIO on Flower's simulation engine and write a run directory."""
    from ..federation.rundir import read_seeds, seed_dir
    from ..launch.simulate import check_data, load_run_dir, simulate_seeds
    from ..launch.simulate import simulate as run
    from ..launch.flwr_cli import FlowerError

    if (scenario is None) == (resume is None):
        raise InputError("give a SCENARIO to run, or --resume RUN_DIR (not both)")
    chosen = parse_seeds(seeds)
    if resume is not None:
        if out_dir or set_ or chosen or in_process:
            raise InputError("--resume continues a run as it was: --out, --set, --seeds and --in-process do not apply")
        run_dir, chosen = resume, read_seeds(resume)
        # A multi-seed run: the scenario of its first seed (any seed's differs only in the seed).
        loaded = load_run_dir(seed_dir(resume, chosen[0])) if chosen else load_run_dir(resume)
    else:
        loaded = load_scenario(scenario, set_ or [])
        chosen = chosen or loaded.seeds
        run_dir = out_dir or default_out(loaded.name)
        if run_dir.exists() and any(run_dir.iterdir()):
            raise InputError(f"--out: {run_dir} exists and is not empty")
        check_data(loaded, chosen, ray_address, in_process)  # before the progress bar: one line on error
    labels = [(seed, name) for seed in (chosen or [None]) for name in loaded.arms]
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=as_json) as bar:
        tasks = {(seed, name): bar.add_task(f"arm {name}" + (f", seed {seed}" if seed is not None else ""),
                                            total=loaded.arms[name].training.rounds) for seed, name in labels}
        try:
            if chosen:
                summaries = simulate_seeds(loaded, run_dir, chosen, lambda seed, arm, done, _: bar.update(
                    tasks[seed, arm], completed=done), ray_address, resume=resume is not None, in_process=in_process)
            elif in_process:
                from ..launch.inprocess import simulate_in_process

                summaries = {None: simulate_in_process(loaded, run_dir, lambda arm, done, _: bar.update(
                    tasks[None, arm], completed=done))}
            else:
                summaries = {None: run(loaded, run_dir, lambda arm, done, _: bar.update(tasks[None, arm],
                                       completed=done), ray_address, resume=resume is not None)}
        except FlowerError as exc:
            fail(str(exc))
            raise typer.Exit(1) from None
    if as_json:
        print(json.dumps({"run_dir": str(run_dir), "arms": summaries[None]} if not chosen else
                         {"run_dir": str(run_dir), "seeds": {str(s): arms for s, arms in summaries.items()}}))
        return
    table = Table(title=f"{loaded.name}: last round per arm")
    for column in ("arm", *(["seed"] if chosen else []), "rounds", "test top-1", "test loss", "seconds/round"):
        table.add_column(column, justify="right" if column != "arm" else "left")
    for seed, summary in summaries.items():
        for name, last in summary.items():
            table.add_row(name, *([str(seed)] if chosen else []), str(last.get("round", "-")),
                          f"{last.get('accuracy', float('nan')):.3f}", f"{last.get('loss', float('nan')):.3f}",
                          f"{last.get('seconds', float('nan')):.1f}")
    out.print(table)
    typer.echo(f"run directory: {run_dir}")


def parse_seeds(text: str | None) -> list[int] | None:
    """``--seeds 0,1,2`` as a list (None when not given); a bad list is a one-line error."""
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts or not all(p.isdigit() for p in parts):
        raise InputError(f"--seeds: expected comma-separated non-negative integers, got {text!r}")
    if len(set(parts)) != len(parts):
        raise InputError(f"--seeds: each seed once, got {text!r}")
    return [int(p) for p in parts]
