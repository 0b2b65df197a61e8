"""The secure-aggregation part of the results: what a server still reads through Flower's SecAgg+ sum.

Through Flower's real protocol (one simulation, one Flower run for all its arms): for K clients a round in
CLIENTS and FedSGD batch sizes in BATCHES, the ViT and MJP 0.25 at init, one round each, attacked (a) by the
privacy part's passive attacks on the aggregate and (b) by a planting server (imprint) that plants for every
client and tunes SecAgg+'s settings to its bins. K = 1 is one client's reply without SecAgg+ (Flower's protocol
needs two clients; one client's sum is its reply). Every client scores the reconstructions against its own
batch; a cell's figures are means over its clients. And the accuracy part's ViT at its first seed trained
again with SecAgg+ on (Flower's settings), beside its run without.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..audit.store import AuditRecord, AuditStore
from ..federation.rundir import atomic_json, read_jsonl
from ..scenario import Scenario, apply_overrides, parse_scenario, read_raw
from .provenance import read_json
from .budgets import CONVERGED
from .realism import RECOGNISABLE_SSIM
from .settings import REFERENCE, SETTINGS, part_overrides

CLIENTS = (1, 2, 4, 8)
BATCHES = (1, 4)
ARMS = (REFERENCE, "mjp-0.25")
ATTACKS = ("passive", "imprint")
PART_DIR = "runs/secure"
ATTACKED = "attacks"  # the cells' run directory in PART_DIR
ACCURACY = "accuracy-secagg"


def cell_name(arm: str, clients: int, batch: int, attack: str) -> str:
    return f"{arm}-k{clients}-b{batch}-{attack}"


@dataclass(frozen=True)
class Grid:
    """The part's cells: arms x clients a round x batch sizes x ATTACKS."""

    arms: tuple[str, ...] = ARMS
    clients: tuple[int, ...] = CLIENTS
    batches: tuple[int, ...] = BATCHES

    def cells(self) -> list[tuple[str, int, int, str]]:
        return [(arm, k, batch, attack) for arm in self.arms for k in self.clients for batch in self.batches
                for attack in ATTACKS]


def ran_grid(out: Path) -> tuple[Grid, dict[str, Any]] | None:
    """The grid the part ran into ``out`` with and its part.json (None when it did not run)."""
    info = read_json(out / PART_DIR / "part.json")
    return (Grid(*(tuple(info[key]) for key in ("arms", "clients", "batches"))), info) if info else None


def cell_overrides(clients: int, batch: int, attack: str, federation: int) -> list[str]:
    """One cell: K of ``federation`` clients sampled, one FedSGD round at batch ``batch``, SecAgg+ from K = 2."""
    common = [f"clients.num_clients={federation}", f"clients.per_round={clients}", "clients.min_per_round=1",
              "training.rounds=1", "training.mode=fedsgd", f"training.batch_size={batch}",
              f"training.secure_aggregation={{enabled: {str(clients > 1).lower()}}}", "audit.clients=all"]
    if attack == "imprint":
        return [*common, "audit.attacks=[]", "audit.server.kind=imprint", "audit.server.clients=all"]
    return common


def part_grid(path: Path, arms: list[str] | None) -> Grid:
    """The grid of the part: its arms that the file has (and ``--arms`` selects)."""
    have = read_raw(path).get("arms") or {}
    return Grid(arms=tuple(a for a in ARMS if a in have and (not arms or a in arms)))


def secure_scenario(path: Path, setting: str, overrides: list[str], grid: Grid) -> Scenario:
    """The part's arms, one per cell of ``grid``, from the privacy part's file and setting."""
    raw = apply_overrides(read_raw(path), [*SETTINGS[setting]["privacy"], *part_overrides("privacy", overrides)])
    cells = {}
    for arm, clients, batch, attack in grid.cells():
        cell = apply_overrides(dict(raw["arms"][arm] or {}), cell_overrides(clients, batch, attack, max(grid.clients)))
        if attack == "passive" and batch > 1:  # APRIL's closed form reads one example: refused at a larger batch
            attacks = ((raw["arms"][arm] or {}).get("audit") or raw.get("audit") or {}).get("attacks") or []
            cell["audit"] = {**cell.get("audit", {}), "attacks": [a for a in attacks if a["name"] != "april"]}
        cells[cell_name(arm, clients, batch, attack)] = cell
    return parse_scenario({**raw, "name": "secure-aggregation", "arms": cells}, source=str(path))


def accuracy_with_secagg(accuracy: Scenario, seed: int) -> Scenario:
    """The accuracy part's ViT at ``seed`` with SecAgg+ on (Flower's settings): only ``secure_aggregation``
    differs from the arm it is read against."""
    arm = accuracy.arms[REFERENCE]
    secure = arm.model_copy(update={"name": ACCURACY, "seed": seed, "training": arm.training.model_copy(update={
        "secure_aggregation": arm.training.secure_aggregation.model_copy(update={"enabled": True})})})
    return accuracy.model_copy(update={"name": ACCURACY, "arms": {ACCURACY: secure}, "seeds": None})


def _mean(records: list[AuditRecord], metric: str) -> float | None:
    values = [r.metrics[metric] for r in records if metric in r.metrics]
    return float(np.mean(values)) if values else None


def cell_row(records: list[AuditRecord], arm: str, clients: int, batch: int, attack: str) -> dict[str, Any]:
    """A cell's figures: the strongest attack (highest mean matched PSNR over the clients' receipts), its PSNR,
    SSIM, whether recognisable, and a planting attack's share of patches read exactly."""
    row: dict[str, Any] = {"arm": arm, "clients": clients, "batch": batch, "attack": attack}
    scored = [r for r in records if r.status == "scored"]
    if not scored:
        reasons = sorted({r.reason for r in records if r.reason})
        return row | {"not_measured": "; ".join(reasons) or "no scored record"}
    by_attack = {name: [r for r in scored if r.attack == name] for name in sorted({r.attack for r in scored})}
    strongest = max(by_attack, key=lambda name: _mean(by_attack[name], "psnr") or float("-inf"))
    chosen = by_attack[strongest]
    ssim = _mean(chosen, "ssim")
    return row | {
        "strongest": strongest, "psnr": _mean(chosen, "psnr"), "ssim": ssim,
        "recognisable": None if ssim is None else ssim >= RECOGNISABLE_SSIM,
        "patches_exact": _mean(chosen, "patches_exact"), "receipts": len(chosen), "attacks": sorted(by_attack),
        "aggregate": chosen[0].threat_model.get("aggregate", "one reply"),
        "settings": chosen[0].threat_model.get("secagg_settings", ""),
    }


def secure_rows(run_dir: Path, grid: Grid) -> list[dict[str, Any]]:
    """Every cell of the part's run directory, in the grid's order."""
    records = AuditStore(run_dir).records() if (run_dir / "audit").exists() else []
    return [cell_row([r for r in records if r.arm == cell_name(*cell)], *cell) for cell in grid.cells()]


def final_accuracy(run_dir: Path, arm: str) -> float | None:
    rows = read_jsonl(run_dir / "arms" / arm / "metrics.jsonl")
    return float(rows[-1]["accuracy"]) if rows else None


def read_secure(out: Path) -> dict[str, Any]:
    """The part's rows and its accuracy beside the accuracy part's (empty when the part did not run)."""
    ran = ran_grid(out)
    if ran is None:
        return {}
    grid, info = ran
    rows = secure_rows(out / PART_DIR / ATTACKED, grid)
    seed = info.get("seed")
    plain = final_accuracy(out / "runs" / "accuracy" / f"seed-{seed}", REFERENCE) if seed is not None else None
    return {**info, "rows": rows, "accuracy": {"secagg": final_accuracy(out / PART_DIR / "accuracy", ACCURACY),
                                               "plain": plain}}


def secure_readings(rows: list[dict[str, Any]]) -> list[str]:
    """What SecAgg+ does to each cell, against the same arm, batch and attack from one client (K = 1)."""
    alone = {(r["arm"], r["batch"], r["attack"]): r for r in rows if r["clients"] == 1}
    said = []
    for row in rows:
        base = alone.get((row["arm"], row["batch"], row["attack"]))
        if "not_measured" in row:
            said.append(f"not measured: {row['not_measured']}")
        elif row["clients"] == 1:
            said.append("one reply, no SecAgg+ (reference)")
        elif base is None or "not_measured" in base:
            said.append("–")
        elif row["attack"] == "imprint":
            said.append(_imprint_reading(row, base))
        else:
            said.append(_passive_reading(row, base))
    return said


def _imprint_reading(row: dict[str, Any], base: dict[str, Any]) -> str:
    exact, alone = row["patches_exact"] or 0.0, base["patches_exact"] or 0.0
    through = f"{exact:.2f} of each client's patches through the sum of {row['clients']} batches"
    if exact >= alone - 0.05:
        return f"does not stop it: {through} ({alone:.2f} from one reply)"
    return f"reads fewer: {through} ({alone:.2f} from one reply; the bins are shared by more tokens)"


def _passive_reading(row: dict[str, Any], base: dict[str, Any]) -> str:
    if row["recognisable"]:
        return "does not stop it: still recognisable through the sum"
    # A "not recognisable" counts only from an attacker shown converged (the row's attack budget).
    bound = "converged at 4x" if str(row.get("budget", "")).startswith(CONVERGED) else "lower bound"
    if base["recognisable"]:
        return f"stops it at this budget: recognisable from one reply, not through the sum ({bound})"
    return f"not recognisable with or without SecAgg+ at this budget ({bound})"


def run_secure(scenario: Scenario, grid: Grid, out: Path, setting: str, accuracy: Scenario | None,
               seed: int | None, progress: Callable[[str, int, int], None], ray_address: str | None = None) -> Path:
    """Run the part's cells (``scenario``, from :func:`secure_scenario`) and, given the accuracy part's scenario,
    its ViT with SecAgg+ at ``seed``, as one Flower sweep into ``out/runs/secure``; return its part.json."""
    from ..launch.simulate import Planned, simulate_runs

    planned = [Planned(scenario.with_seed(seed) if seed is not None else scenario, out / PART_DIR / ATTACKED)]
    if accuracy is not None and seed is not None:
        planned.append(Planned(accuracy_with_secagg(accuracy, seed), out / PART_DIR / "accuracy"))
    simulate_runs(planned, lambda _run, arm, done, total: progress(arm, done, total), ray_address)
    target = out / PART_DIR / "part.json"
    atomic_json(target, {"setting": setting, **asdict(grid), "seed": seed if accuracy is not None else None})
    return target

