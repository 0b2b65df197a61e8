"""Running both parts and writing the results from the run directories."""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..federation.rundir import atomic_json, atomic_write
from .accuracy import accuracy_rows
from .convergence import run_convergence
from .detector import run_detector
from .dishonest import run_dishonest
from .realism import run_realism
from .secure import part_grid, run_secure, secure_scenario
from .figures import accuracy_curves_figure, leakage_accuracy_figure, rounds_figure, strength_figure
from .judging import collect, realism_rows, rows, worst_rows
from .provenance import TOGETHER, read_json, git_commit, machine
from .settings import PARTS, REFERENCE, RUN_ORDER, load_part
from .tables import render_accuracy, render_detector, render_markdown

Progress = Callable[[str, str, int, int], None]  # (part, arm, rounds done, rounds)
ACCURACY_FIGURE = "accuracy_over_rounds.png"


def run_results(path: Path, out: Path, setting: str = "quick", overrides: list[str] | None = None,
                arms: list[str] | None = None, progress: Progress = lambda *_: None,
                ray_address: str | None = None, seeds: list[int] | None = None,
                parts: list[str] | None = None) -> Path:
    """Run the parts (``out/runs/PART``), then write the results; return results.md's path.

    The accuracy part runs once per seed (``seeds``, else the file's ``seeds``) into ``runs/accuracy/seed-S``;
    the privacy part runs on the first of them, and the dishonest server's part (imprint, in this process) on
    the privacy part's arms with that seed; then the grid of :mod:`.realism` (in this process), from the
    accuracy part's final weights of that seed. The privacy and accuracy parts run on Flower as one sweep (one
    SuperLink, and one Flower run where their federations match), so their seconds are that sweep's, shared.
    ``parts``: only these, into an ``out`` whose other parts may have run before. provenance.json gets each
    part's seconds as it finishes, so a stopped run keeps them.
    """
    from ..launch.simulate import Planned, plan_seeds, simulate_runs

    chosen = _chosen_parts(parts)
    scenarios = {part: load_part(path, setting, part, overrides or [], arms) for part in PARTS}
    grid = part_grid(path, arms)
    # Built (and so checked) before anything runs.
    secure = secure_scenario(path, setting, overrides or [], grid) if "secure" in chosen else None
    seeds = seeds or scenarios["accuracy"].seeds
    for part in chosen:
        run_dir = out / "runs" / part
        if run_dir.exists() and any(run_dir.iterdir()):
            raise InputError(f"--out: {run_dir} exists and is not empty (use a new --out, or --report-only)")
    command = ["fedmjp", "results", *(["--quick"] if setting == "quick" else []), "--out", str(out),
               *(["--seeds", ",".join(map(str, seeds))] if seeds else []),
               *(f"--set {shlex.quote(o)}" for o in overrides or []), *(["--arms", ",".join(arms)] if arms else []),
               *(["--parts", ",".join(chosen)] if parts else [])]
    provenance = _provenance(out, setting, path, " ".join(command), later=parts is not None)
    privacy = scenarios["privacy"].with_seed(seeds[0]) if seeds else scenarios["privacy"]
    on_flower = [part for part in chosen if part in PARTS]

    def flower_parts() -> None:
        """The privacy part and the accuracy part's seeds as one sweep: one SuperLink, and one Flower run for
        the arms that share a federation."""
        planned: list[Planned] = []
        labels: list[tuple[str, int | None]] = []
        if "privacy" in on_flower:
            planned.append(Planned(privacy, out / "runs" / "privacy"))
            labels.append(("privacy", None))
        if "accuracy" in on_flower and seeds:
            planned += plan_seeds(scenarios["accuracy"], out / "runs" / "accuracy", seeds)
            labels += [("accuracy", seed) for seed in seeds]
        elif "accuracy" in on_flower:
            planned.append(Planned(scenarios["accuracy"], out / "runs" / "accuracy"))
            labels.append(("accuracy", None))

        def report(run: int, arm: str, done: int, total: int) -> None:
            part, seed = labels[run]
            progress(part, arm if seed is None else f"{arm}, seed {seed}", done, total)

        simulate_runs(planned, report, ray_address)

    runners: dict[str, Callable[[], object]] = {
        **{part: flower_parts for part in on_flower},
        "dishonest": lambda: run_dishonest(privacy, out / "runs" / "dishonest", setting,
                                           lambda arm, done, total: progress("dishonest", arm, done, total)),
        "detector": lambda: run_detector(privacy, out / "runs" / "detector", setting, out / "runs" / "accuracy",
                                         lambda what, done, total: progress("detector", what, done, total)),
        "realism": lambda: run_realism(path, out, setting, overrides or [], arms, seeds[0] if seeds else None,
                                       lambda _cell, done, total: progress("realism", "cells", done, total)),
        "convergence": lambda: run_convergence(path, out, setting, overrides or [], arms,
                                               seeds[0] if seeds else None,
                                               lambda what, done, total: progress("convergence", what, done, total),
                                               ray_address),
        "secure": lambda: run_secure(secure, grid, out, setting, scenarios["accuracy"], seeds[0] if seeds else None,
                                     lambda arm, done, total: progress("secure", arm, done, total), ray_address),
    }
    if set(on_flower) & set(provenance.get(TOGETHER) or ()):
        provenance.pop(TOGETHER)  # a part of an earlier shared run runs again, alone or with the other
    for part in chosen:
        if part in on_flower[1:]:
            continue  # ran with the first
        load = machine()["load"]
        started = time.perf_counter()
        runners[part]()
        seconds = time.perf_counter() - started
        ran = on_flower if part in on_flower else [part]
        for done in ran:
            provenance["seconds"][done] = seconds
            if parts is not None:
                provenance["parts"][done] = {"command": " ".join(command), "commit": git_commit(), "load": load}
        if len(ran) > 1:
            provenance[TOGETHER] = ran
        atomic_json(out / "provenance.json", provenance)
    return write_results(out)


def _chosen_parts(parts: list[str] | None) -> list[str]:
    """The parts to run, in the order they run."""
    unknown = sorted(set(parts or ()) - set(RUN_ORDER))
    if unknown:
        raise InputError(f"--parts: unknown part {unknown[0]!r} (choose from {', '.join(RUN_ORDER)})")
    if parts is not None and not parts:
        raise InputError("--parts: name at least one part")
    return [p for p in RUN_ORDER if parts is None or p in parts]


def _provenance(out: Path, setting: str, path: Path, command: str, later: bool) -> dict[str, Any]:
    """This run's provenance; with ``later`` (some parts only), that of the run before it, if any, which the
    parts run now join with their own command, commit and load."""
    before = read_json(out / "provenance.json") if later else {}
    if before and before.get("setting") != setting:
        raise InputError(f"--out: {out} holds results of the {before.get('setting')} setting, not the {setting} "
                         "one (use a new --out)")
    return {"setting": setting, "command": command, "scenario": str(path), "commit": git_commit(),
            "machine": machine(), **before, "seconds": dict(before.get("seconds") or {}),
            "parts": dict(before.get("parts") or {})}


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
                                       "dishonest": data["dishonest"].get("rows", []), "detector": data["detector"],
                                       "realism": realism_rows(data["realism"], reference),
                                       "secure": data["secure"], "provenance": provenance})
    if data["accuracy"]:
        curves = accuracy_curves_figure(data["curves"])
        shown = []
        if curves is not None:
            curves.savefig(out / ACCURACY_FIGURE, format="png")
            shown.append(ACCURACY_FIGURE)
        atomic_write(out / "accuracy.md", render_accuracy(data, accuracy, shown, provenance).encode())
    if data["detector"]:
        atomic_write(out / "detector.md", "\n".join(["# fedmjp results: the client's model check as a detector",
                                                      *render_detector(data["detector"], data["arms"]), ""]).encode())
    target = out / "results.md"
    atomic_write(target, render_markdown(data, table, worst, written, provenance, reference).encode())
    return target
