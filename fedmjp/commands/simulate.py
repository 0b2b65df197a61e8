"""``fedmjp simulate`` and ``fedmjp validate``."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .app import app, fail, user_errors
from ..errors import InputError
from ..scenario import Scenario, load_scenario

if TYPE_CHECKING:
    from ..launch.simulate import Planned, RunProgress

out = Console()

ScenarioArg = Annotated[Path, typer.Argument(help="Scenario YAML file.", show_default=False)]
SetOpt = Annotated[
    Optional[list[str]],
    typer.Option("--set", help="Override a field: --set training.rounds=5 (repeatable; VALUE is YAML)."),
]


@app.command("validate")
@user_errors
def validate(scenario: ScenarioArg, set_: SetOpt = None) -> None:
    """Check a scenario file, and that its data splits among the clients as asked, without running it (or
    downloading its data)."""
    loaded = load_scenario(scenario, set_ or [])
    from ..launch.simulate import check_data

    splits = check_data(loaded, loaded.seeds, download=False)
    typer.echo(f"{scenario}: valid ({len(loaded.arms)} arm(s): {', '.join(loaded.arms)})")
    for arm, split in splits.items():
        typer.echo(f"  {arm}: {split.describe()}")


def default_out(name: str) -> Path:
    return Path("runs") / f"{name}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"


@dataclass(frozen=True)
class Sweep:
    """The scenarios of one ``fedmjp simulate``, each with its run directory and seeds."""

    scenarios: list[Scenario]
    out: Path  # the run directory of one scenario, the parent of several's
    run_dirs: list[Path]
    seeds: list[list[int] | None]
    resume: bool

    def prepare(self) -> tuple[list[Planned], list[tuple[int, int | None]]]:
        """Every run directory to write (a seed's, or the scenario's) and, for each, (scenario index, seed); a
        seeded scenario's folder and its seeds.json are made here."""
        from ..launch.simulate import Planned, plan_seeds

        planned: list[Planned] = []
        labels: list[tuple[int, int | None]] = []
        for k, (scenario, run_dir, seeds) in enumerate(zip(self.scenarios, self.run_dirs, self.seeds)):
            if seeds:
                planned += plan_seeds(scenario, run_dir, seeds, self.resume)
                labels += [(k, seed) for seed in seeds]
            else:
                planned.append(Planned(scenario, run_dir, self.resume))
                labels.append((k, None))
        return planned, labels


@app.command("simulate")
@user_errors
def simulate(
    scenarios: Annotated[Optional[list[Path]], typer.Argument(
        help="Scenario YAML file(s). Several run as one sweep, each into OUT/NAME; arms whose clients take the "
             "same resources share a Flower run.", show_default=False)] = None,
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
    """Run every arm of SCENARIO(S) on Flower's simulation engine and write a run directory for each."""
    from ..launch.flwr_cli import FlowerError

    sweep = _sweep(scenarios or [], out_dir, resume, set_ or [], parse_seeds(seeds), ray_address, in_process)
    planned, labels = sweep.prepare()
    several = len(sweep.scenarios) > 1

    def label(run: int, arm: str) -> str:
        k, seed = labels[run]
        return (f"{sweep.scenarios[k].name}: " if several else "") + f"arm {arm}" + \
            (f", seed {seed}" if seed is not None else "")

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=as_json) as bar:
        tasks = {(run, name): bar.add_task(label(run, name), total=arm.training.rounds)
                 for run, p in enumerate(planned) for name, arm in p.scenario.arms.items()}
        try:
            summaries = _run(planned, lambda run, arm, done, _: bar.update(tasks[run, arm], completed=done),
                             ray_address, in_process)
        except FlowerError as exc:
            fail(str(exc))
            raise typer.Exit(1) from None
    results = [{"run_dir": str(run_dir)} for run_dir in sweep.run_dirs]
    for (k, seed), summary in zip(labels, summaries):
        if seed is None:
            results[k]["arms"] = summary
        else:
            results[k].setdefault("seeds", {})[str(seed)] = summary
    if as_json:
        print(json.dumps({"run_dir": str(sweep.out), "scenarios": {s.name: r for s, r in zip(sweep.scenarios, results)}}
                         if several else results[0]))
        return
    for k, scenario in enumerate(sweep.scenarios):
        seeded = sweep.seeds[k] is not None
        table = Table(title=f"{scenario.name}: last round per arm")
        for column in ("arm", *(["seed"] if seeded else []), "rounds", "test top-1", "test loss", "seconds/round"):
            table.add_column(column, justify="right" if column != "arm" else "left")
        for (j, seed), summary in zip(labels, summaries):
            for name, last in summary.items() if j == k else ():
                table.add_row(name, *([str(seed)] if seeded else []), str(last.get("round", "-")),
                              f"{last.get('accuracy', float('nan')):.3f}", f"{last.get('loss', float('nan')):.3f}",
                              f"{last.get('seconds', float('nan')):.1f}")
        out.print(table)
        for (j, _), summary in zip(labels, summaries):
            for name, last in summary.items() if j == k else ():
                if secure := last.get("secure_aggregation"):
                    typer.echo(f"{name}: SecAgg+ of {secure['clients']} clients in the last round, within "
                               f"{secure['error_bound']:.2g} of their plain weighted mean (quantization bound); "
                               f"{len(secure['warnings'])} precision warning(s) in its metrics.jsonl")
        typer.echo(f"run directory: {sweep.run_dirs[k]}")


def _sweep(paths: list[Path], out_dir: Path | None, resume: Path | None, overrides: list[str],
           seeds: list[int] | None, ray_address: str | None, in_process: bool) -> Sweep:
    """What to run, checked before anything runs (one line on error)."""
    from ..federation.rundir import read_seeds, seed_dir
    from ..launch.simulate import check_data, load_run_dir

    if bool(paths) == (resume is not None):
        raise InputError("give a SCENARIO to run, or --resume RUN_DIR (not both)")
    if resume is not None:
        if out_dir or overrides or seeds or in_process:
            raise InputError("--resume continues a run as it was: --out, --set, --seeds and --in-process do not apply")
        chosen = read_seeds(resume)
        # A multi-seed run: the scenario of its first seed (any seed's differs only in the seed).
        loaded = load_run_dir(seed_dir(resume, chosen[0])) if chosen else load_run_dir(resume)
        return Sweep([loaded], resume, [resume], [chosen], resume=True)
    loaded_all = [load_scenario(path, overrides) for path in paths]
    names = [scenario.name for scenario in loaded_all]
    if len(set(names)) != len(names):
        twice = next(name for name in names if names.count(name) > 1)
        raise InputError(f"SCENARIO: two scenarios are named {twice!r}: each runs into OUT/NAME, so names must differ")
    run_dir = out_dir or default_out(names[0] if len(names) == 1 else "sweep")
    if run_dir.exists() and any(run_dir.iterdir()):
        raise InputError(f"--out: {run_dir} exists and is not empty")
    chosen_all = [seeds or scenario.seeds for scenario in loaded_all]
    for scenario, chosen in zip(loaded_all, chosen_all):
        check_data(scenario, chosen, ray_address, in_process)  # before the progress bar: one line on error
    run_dirs = [run_dir] if len(names) == 1 else [run_dir / name for name in names]
    return Sweep(loaded_all, run_dir, run_dirs, chosen_all, resume=False)


def _run(planned: list[Planned], progress: RunProgress, ray_address: str | None,
         in_process: bool) -> list[dict[str, Any]]:
    if not in_process:
        from ..launch.simulate import simulate_runs

        return simulate_runs(planned, progress, ray_address)
    from ..launch.inprocess import simulate_in_process

    return [simulate_in_process(p.scenario, p.out, lambda arm, done, total, run=run: progress(run, arm, done, total))
            for run, p in enumerate(planned)]


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
