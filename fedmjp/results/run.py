"""Running both parts and writing the results from the run directories."""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable
from pathlib import Path

from ..errors import InputError
from ..rundir import atomic_json, atomic_write
from .accuracy import accuracy_rows
from .dishonest import run_dishonest
from .realism import run_realism
from .figures import accuracy_curves_figure, leakage_accuracy_figure, rounds_figure, strength_figure
from .judging import collect, realism_rows, rows, worst_rows
from .provenance import read_json, git_commit, machine
from .settings import PARTS, REFERENCE, load_part
from .tables import render_accuracy, render_markdown

Progress = Callable[[str, str, int, int], None]  # (part, arm, rounds done, rounds)
ACCURACY_FIGURE = "accuracy_over_rounds.png"


def run_results(path: Path, out: Path, setting: str = "quick", overrides: list[str] | None = None,
                arms: list[str] | None = None, progress: Progress = lambda *_: None,
                ray_address: str | None = None, seeds: list[int] | None = None) -> Path:
    """Run the parts (``out/runs/PART``), then write the results; return results.md's path.

    The accuracy part runs once per seed (``seeds``, else the file's ``seeds``) into ``runs/accuracy/seed-S``;
    the privacy part runs on the first of them, and the dishonest server's part (imprint, in this process) on
    the privacy part's arms with that seed; then the grid of :mod:`.realism` (in this process), from the
    accuracy part's final weights of that seed.
    """
    from ..simulate import simulate, simulate_seeds

    scenarios = {part: load_part(path, setting, part, overrides or [], arms) for part in PARTS}
    seeds = seeds or scenarios["accuracy"].seeds
    for part in (*PARTS, "dishonest", "realism"):
        run_dir = out / "runs" / part
        if run_dir.exists() and any(run_dir.iterdir()):
            raise InputError(f"--out: {run_dir} exists and is not empty (use a new --out, or --report-only)")
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    privacy = scenarios["privacy"].with_seed(seeds[0]) if seeds else scenarios["privacy"]
    simulate(privacy, out / "runs" / "privacy", lambda arm, done, total: progress("privacy", arm, done, total),
             ray_address)
    seconds["privacy"] = time.perf_counter() - started
    started = time.perf_counter()
    if seeds:
        simulate_seeds(scenarios["accuracy"], out / "runs" / "accuracy", seeds,
                       lambda seed, arm, done, total: progress("accuracy", f"{arm}, seed {seed}", done, total),
                       ray_address)
    else:
        simulate(scenarios["accuracy"], out / "runs" / "accuracy",
                 lambda arm, done, total: progress("accuracy", arm, done, total), ray_address)
    seconds["accuracy"] = time.perf_counter() - started
    started = time.perf_counter()
    run_dishonest(privacy, out / "runs" / "dishonest", setting,
                  lambda arm, done, total: progress("dishonest", arm, done, total))
    seconds["dishonest"] = time.perf_counter() - started
    started = time.perf_counter()
    run_realism(path, out, setting, overrides or [], arms, seeds[0] if seeds else None,
                lambda _cell, done, total: progress("realism", "cells", done, total))
    seconds["realism"] = time.perf_counter() - started
    command = ["fedmjp", "results", *(["--quick"] if setting == "quick" else []), "--out", str(out),
               *(["--seeds", ",".join(map(str, seeds))] if seeds else []),
               *(f"--set {shlex.quote(o)}" for o in overrides or []), *(["--arms", ",".join(arms)] if arms else [])]
    atomic_json(out / "provenance.json", {"setting": setting, "command": " ".join(command), "seconds": seconds,
                                          "scenario": str(path), "commit": git_commit(), "machine": machine()})
    return write_results(out)


def write_results(out: Path, reference: str = REFERENCE) -> Path:
    """results.md, results.json and the figures in ``out``, recomputed from ``out/runs``."""
    data = collect(out)
    table = rows(data, reference)
    worst = worst_rows(data, table, reference)
    figures = {
        "leakage_vs_accuracy.png": leakage_accuracy_figure(table),
        "leakage_over_rounds.png": rounds_figure(data),
        "defence_strength.png": strength_figure(data, table),
    }
    written = []
    for name, figure in figures.items():
        if figure is not None:
            figure.savefig(out / name, format="png")
            written.append(name)
    provenance = read_json(out / "provenance.json")
    accuracy = accuracy_rows(data["accuracy"], data["accuracy_arms"], reference) if data["accuracy"] else []
    atomic_json(out / "results.json", {"rows": table, "strongest": worst, "accuracy": accuracy,
                                       "dishonest": data["dishonest"].get("rows", []),
                                       "realism": realism_rows(data["realism"], reference), "provenance": provenance})
    if data["accuracy"]:
        curves = accuracy_curves_figure(data["curves"])
        shown = []
        if curves is not None:
            curves.savefig(out / ACCURACY_FIGURE, format="png")
            shown.append(ACCURACY_FIGURE)
        atomic_write(out / "accuracy.md", render_accuracy(data, accuracy, shown, provenance).encode())
    target = out / "results.md"
    atomic_write(target, render_markdown(data, table, worst, written, provenance, reference).encode())
    return target
