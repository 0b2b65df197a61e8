"""Leakage where users train: the privacy part's arms over batch size x local training x stage.

Each cell is one attacked round in this process (:mod:`fedmjp.launch.inprocess`: the same client arithmetic and
curious server as a Flower run, its receipts scored by the clients) written to ``runs/realism/CELL``, a run
directory that ``fedmjp audit`` reads and :func:`fedmjp.audit.summary.summarize` summarises; the table is
computed from those summaries only. Every client holds the same number of examples: a FedSGD reply is one
gradient of a batch of them, a FedAvg reply one local epoch over all of them (SGD, momentum 0.9), which
the client reports and the replaying attacker uses. "trained" starts from the accuracy part's final weights
of the same arm (its first seed), with the accuracy part's architecture at both stages, so the two compare.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..audit.summary import SCORED, SERVER, read_records, summarize
from ..launch.inprocess import simulate_in_process
from ..federation.rundir import arm_dir, atomic_json, read_jsonl
from ..scenario import Scenario, apply_overrides, parse_scenario, read_raw
from .accuracy import accuracy_runs, resolved_arms
from .budgets import check_specs
from .provenance import read_json
from .settings import ACCURACY_ARMS, SETTINGS, part_overrides

ARMS = ("vit", "naive-0.25", "mjp-0.1", "mjp-0.25", "mjp-0.5")
BATCHES = (1, 4, 16)
TRAININGS = ("fedsgd", "fedavg")
STAGES = ("init", "trained")
# A reconstruction whose mean SSIM to the client's images is below this is counted as not recognisable
# (the reasons are stated in the page: see RECOGNISABLE_WHY).
RECOGNISABLE_SSIM = 0.3
# Anchors of the rule, measured on 64 CIFAR-10 test images (32 px) with this project's SSIM: the image
# that shows nothing, and a blur that leaves colour layout and hardly an object (tests hold the order).
GREY_SSIM, BLUR_SIGMA, BLUR_SSIM = 0.196, 3.0, 0.457
RECOGNISABLE_WHY = (
    f"SSIM credits luminance, contrast and structure, so even an image that shows nothing scores above 0: the "
    f"mid-grey image {GREY_SSIM:.2f} on 64 CIFAR-10 test images, and a Gaussian blur of sigma {BLUR_SIGMA:g} px, "
    f"which leaves the layout of colours and hardly an object at 32 px, {BLUR_SSIM:.2f}. {RECOGNISABLE_SSIM:g} "
    "sits between them: below it a reconstruction is nearer to showing nothing than to a heavy blur. PSNR would "
    "not do: that blur scores 19.5 dB, about what an optimisation attack reaches on a batch without showing it.")
GRID = "grid.json"
# The FedAvg clients' local training: what people run (SGD with momentum, one epoch over their data), on
# their images as stored (the accuracy part's augmentation would leave the receipts nothing to score).
LOCAL = ["training.optimizer=sgd", "training.lr=0.01", "training.momentum=0.9", "training.local_epochs=1",
         "training.local_steps=null", "training.lr_schedule=constant", "training.augment=false"]


@dataclass(frozen=True)
class Cell:
    stage: str
    training: str
    batch: int

    @property
    def name(self) -> str:
        return f"{self.stage}-{self.training}-b{self.batch}"


@dataclass(frozen=True)
class Budget:
    """Per setting: examples each client holds, replies attacked per cell, the attacks and their budgets.
    ``fedavg``: replies and steps of the FedAvg cells where they differ (every iteration of a replay attack
    unrolls the client's whole local epoch, up to ``examples`` steps)."""

    examples: int
    replies: int
    steps: int  # of every optimisation attack (one restart)
    attacks: tuple[str, ...]
    fedavg: tuple[int, int] | None = None  # (replies, steps)

    def replies_for(self, cell: Cell) -> int:
        return self.fedavg[0] if self.fedavg and cell.training == "fedavg" else self.replies

    def specs(self, cell: Cell) -> list[dict[str, Any]]:
        """The attacks of a cell: april's closed form only where it applies (one example, one step)."""
        closed_form = cell.training == "fedsgd" and cell.batch == 1
        steps = self.fedavg[1] if self.fedavg and cell.training == "fedavg" else self.steps
        return [{"name": name} if name == "april" else
                {"name": name, "options": {"steps": steps, "restarts": 1}}
                for name in self.attacks if name != "april" or closed_form]


BUDGETS = {
    # What each cell cost when these budgets were chosen: docs/results/settings.md.
    "quick": Budget(16, 1, 100, ("april", "ig", "adaptive")),
    # The full setting's accuracy model. FedAvg cells attack one reply for 100 steps: at FedSGD's budget the
    # FedAvg cells alone would take hours on 2 cores.
    "full": Budget(16, 2, 200, ("april", "ig", "april-opt", "adaptive"), fedavg=(1, 100)),
}
Progress = Callable[[str, int, int], None]  # (cell, cells done, cells)


def cells(stages: tuple[str, ...] = STAGES, batches: tuple[int, ...] = BATCHES) -> list[Cell]:
    return [Cell(s, t, b) for s in stages for t in TRAININGS for b in batches]


def trained_weights(accuracy_dir: Path) -> dict[str, Path]:
    """Arm -> final weights of the accuracy part's first seed (empty when that part did not run)."""
    runs = accuracy_runs(accuracy_dir) if accuracy_dir.is_dir() else {}
    if not runs:
        return {}
    run_dir = runs[min(runs)]
    found = {arm: (arm_dir(run_dir, arm) / "final_weights.pt").resolve() for arm in resolved_arms(run_dir)}
    return {arm: path for arm, path in found.items() if path.is_file()}


def cell_scenario(path: Path, setting: str, overrides: list[str], cell: Cell, arms: list[str],
                  weights: dict[str, Path], num_clients: int, seed: int | None, budget: Budget,
                  budget_factor: int = 1, restarts: int | None = None) -> Scenario:
    """The cell's scenario: the accuracy part's model and data, the cell's training, the budget's attacks,
    then the user's ``realism:KEY=VALUE`` (and unscoped) overrides; every attack's budget times
    ``budget_factor`` (the convergence check's larger budget, on whatever attacks the overrides chose), and with
    ``restarts`` only the attacks that take restarts, each with that many."""
    raw = apply_overrides(read_raw(path), [*SETTINGS[setting]["accuracy"], *part_overrides("accuracy", overrides)])
    raw = apply_overrides(raw, [
        *LOCAL, f"training.mode={cell.training}", f"training.batch_size={cell.batch}", "training.rounds=1",
        f"clients.num_clients={num_clients}", f"clients.per_round={budget.replies_for(cell)}",
        "data.partitioning={method: iid}", "data.test_limit=100", f"audit.attacks={json.dumps(budget.specs(cell))}",
        "audit.clients=all", *part_overrides("realism", overrides)])
    chosen = {}
    for name in arms:
        arm = dict(raw["arms"][name] or {})
        if cell.stage == "trained":
            arm["model"] = {**(arm.get("model") or {}), "weights": str(weights[name])}
        chosen[name] = arm
    raw["arms"] = chosen
    raw["name"] = f"{raw.get('name', 'results')}-{cell.name}"
    if budget_factor != 1 or restarts is not None:
        raw["audit"]["attacks"] = check_specs(raw["audit"]["attacks"], budget_factor, cell.batch == 1, restarts)
    scenario = parse_scenario(raw, source=str(path))
    return scenario.with_seed(seed) if seed is not None else scenario


def train_size(path: Path, setting: str, overrides: list[str], arms: list[str], seed: int | None,
               budget: Budget) -> int:
    """Examples in the cells' training split (the population is cut so each client holds the budget's)."""
    from ..federation.workload import dataset

    probe = cell_scenario(path, setting, overrides, cells(("init",))[0], arms, {}, budget.replies, seed, budget)
    return len(dataset(next(iter(probe.arms.values())), "train"))


def run_realism(path: Path, out: Path, setting: str, overrides: list[str], arms: list[str] | None,
                seed: int | None, progress: Progress = lambda *_: None, budget: Budget | None = None,
                batches: tuple[int, ...] = BATCHES, *, part: str = "realism", only: tuple[Cell, ...] | None = None,
                budget_factor: int = 1, restarts: int | None = None) -> Path:
    """Every cell into ``out/runs/PART/CELL`` and the grid's description into ``grid.json``; the
    trained stage only when the accuracy part left final weights for every arm. ``budget``: the
    setting's unless given; ``only``: these cells of the grid; ``budget_factor``: every attack's budget times it;
    ``restarts``: the attacks that take restarts only, with that many."""
    budget = budget or BUDGETS[setting]
    part_dir = out / "runs" / part
    weights = trained_weights(out / "runs" / "accuracy")
    chosen = [a for a in ARMS if a in (arms or ARMS) and a in ACCURACY_ARMS]
    todo = cells(STAGES if all(a in weights for a in chosen) else ("init",), batches)
    todo = [c for c in todo if c in only] if only is not None else todo
    train_examples = train_size(path, setting, overrides, chosen, seed, budget)
    num_clients = train_examples // budget.examples
    for done, cell in enumerate(todo):
        progress(cell.name, done, len(todo))
        scenario = cell_scenario(path, setting, overrides, cell, chosen, weights, num_clients, seed, budget,
                                 budget_factor, restarts)
        simulate_in_process(scenario, part_dir / cell.name)
    progress("", len(todo), len(todo))
    target = part_dir / GRID
    atomic_json(target, {"setting": setting, "cells": [c.name for c in todo], "arms": chosen,
                         "examples": train_examples // scenario.arms[chosen[0]].clients.num_clients,
                         "trained_from": {a: str(weights[a]) for a in chosen if a in weights}})
    return target


def read_realism(out: Path) -> dict[str, Any]:
    """The grid as written (empty when the part did not run): its description, each cell's summary and
    resolved arms, and the mid-grey baseline's mean SSIM over every scored reconstruction."""
    part_dir = out / "runs" / "realism"
    grid = read_json(part_dir / GRID)
    if not grid:
        return {}
    grey = [r.baseline["ssim"] for name in grid["cells"] for r in read_records(part_dir / name)
            if r.source == SERVER and r.status == SCORED and "ssim" in r.baseline]
    return grid | {"summaries": {name: summarize(part_dir / name) for name in grid["cells"]},
                   "resolved": {name: resolved_arms(part_dir / name) for name in grid["cells"]},
                   "seconds": {name: cell_seconds(part_dir / name) for name in grid["cells"]},
                   "grey_ssim": float(np.mean(grey)) if grey else None}


def cell_seconds(run_dir: Path) -> float:
    """A cell's time: every round of every arm (the clients' training, the attacks, the scoring)."""
    return sum(row["seconds"] for metrics in sorted(run_dir.glob("arms/*/metrics.jsonl"))
               for row in read_jsonl(metrics))
