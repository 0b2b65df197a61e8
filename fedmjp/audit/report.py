"""The audit report: one self-contained HTML page per run directory.

Rendered from jinja2 templates (``templates/``, autoescaped). Everything is inline (figures and
reconstructions as base64 PNG data URIs, CSS, one small script), and a Content-Security-Policy forbids anything else, so the page opens from ``file://`` with no server and never
fetches. It shows reconstructions, which are private data, so it is written owner-only (0600).
"""

from __future__ import annotations

import base64
import functools
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import yaml

from ..errors import InputError
from ..federation.rundir import atomic_write
from ..scoring.reading import judge, reference_for
from .store import FILE_MODE, AuditRecord
from .summary import SCORED, SERVER, leakage_by_round, read_metrics, read_records

REPORT_NAME = "report.html"
# Reconstructions shown per arm and attack, spread over the rounds and clients.
GRID_CELLS = 8
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# (header, summary key, decimals) of the per-attack columns; shared with the terminal table.
STAT_COLUMNS = (
    ("scored", "count", 0), ("PSNR mean", "psnr_mean", 2), ("PSNR max", "psnr_max", 2),
    ("SSIM mean", "ssim_mean", 3), ("SSIM max", "ssim_max", 3), ("patch PSNR", "patch_psnr_mean", 2),
    ("label acc", "label_acc_mean", 2), ("leakage dB", "leakage_mean", 2),
    ("n/a", "not_applicable", 0), ("failed", "failed", 0),
)

# What leakage is measured against: the PSNR of a mid-grey image, an attacker's guess that knows nothing
# (fedmjp.audit.receipt's BASELINE_GREY); the page's caption says so.
BASELINE = "a mid-grey image (what an attacker who knows nothing scores)"
# Under this many test images a round's accuracy is too noisy to read a trend from (95% margin > 3 points).
MEASURABLE_TEST_IMAGES = 1000
# The PSNR axis reaches at least this high (dB): above the recognisable range, so noise near 10 dB looks small.
MIN_PSNR_TOP = 40.0

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"
TEMPLATE = "report.html.j2"


@functools.cache
def _templates() -> jinja2.Environment:
    # Autoescape everything: scenario names, arm names and captions come from the run directory.
    return jinja2.Environment(loader=jinja2.PackageLoader("fedmjp.audit", "templates"), autoescape=True,
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


def write_report(run_dir: Path, summary: dict[str, Any], path: Path | None = None) -> Path:
    """Write the report (atomically, 0600) to ``path`` or RUN_DIR/report.html; return where."""
    target = Path(path) if path is not None else Path(run_dir) / REPORT_NAME
    atomic_write(target, render_report(Path(run_dir), summary).encode(), FILE_MODE)
    return target


def render_report(run_dir: Path, summary: dict[str, Any]) -> str:
    """The whole page as a string."""
    records = read_records(run_dir)
    rounds = {arm: read_metrics(run_dir, arm) for arm in summary["arms"]}
    seeds = sibling_seeds(run_dir)
    packages = ", ".join(f"{name} {version}" for name, version in read_versions(run_dir).items())
    scenario_text = _read_text(run_dir / "scenario.yaml")
    resolved = _resolved_arms(scenario_text)
    reference = reference_arm(summary, resolved)
    return _templates().get_template(TEMPLATE).render(
        csp=CSP,
        title=f"fedmjp leakage audit: {summary.get('scenario') or run_dir.name}",
        meta=[("scenario", summary.get("scenario") or "unnamed"), ("run directory", str(run_dir.resolve())),
              ("versions", packages)],
        summary_headers=("arm", "attack", *(header for header, _, _ in STAT_COLUMNS), "test top-1",
                         "Δ PSNR vs ViT", "reading"),
        summary_rows=summary_rows(summary, reference),
        reference=reference,
        baseline=BASELINE,
        accuracy_note=accuracy_note(resolved, rounds),
        guard={arm: entry["guard"] for arm, entry in summary["arms"].items() if "guard" in entry},
        model_check={arm: entry["model_check"] for arm, entry in summary["arms"].items() if "model_check" in entry},
        plots=plots(summary, records, rounds, seeds),
        grids=grids(run_dir, summary, records),
        scenario_text=scenario_text,
    )


# --------------------------------------------------------------------------- header and tables


def read_versions(run_dir: Path) -> dict[str, str]:
    """versions.json, or a note that it is missing (older run directories may lack it)."""
    path = run_dir / "versions.json"
    if not path.exists():
        return {"(all)": "not recorded"}
    try:
        found = json.loads(path.read_text())
    except json.JSONDecodeError:
        raise InputError(f"{path}: not valid JSON (corrupted run directory)") from None
    if not isinstance(found, dict):
        raise InputError(f"{path}: not a mapping of package names to versions")
    return {str(k): str(v) for k, v in found.items()}


def _resolved_arms(scenario_text: str) -> dict[str, dict[str, Any]]:
    """The run's resolved arms (scenario.yaml), or none when it cannot be read."""
    try:
        arms = (yaml.safe_load(scenario_text) or {}).get("arms")
    except yaml.YAMLError:
        return {}
    return arms if isinstance(arms, dict) else {}


def reference_arm(summary: dict[str, Any], resolved: dict[str, dict[str, Any]]) -> str | None:
    """The arm the others are read against: ``vit`` where there is one, else the first that trains a plain,
    undefended ViT (no jigsaw, learnable position embeddings, no DP or pruning); None without one."""
    if "vit" in summary["arms"]:
        return "vit"
    for name in summary["arms"]:
        arm = resolved.get(name) or {}
        model, defence = arm.get("model") or {}, arm.get("defence") or {}
        if model and not str(model.get("name", "")).startswith("mjp_") and not model.get("fixed_pos_embed") \
                and not defence.get("dp") and not defence.get("prune"):
            return name
    return None


def summary_rows(summary: dict[str, Any], reference: str | None = None) -> list[dict[str, Any]]:
    """One row per arm and attack: the statistics as text, the arm's final test top-1, then the difference
    against the reference arm's same attack (or its strongest, named) and the reading, by the rule of
    ``docs/results`` (fedmjp.scoring.reading)."""
    ref_attacks = summary["arms"][reference]["attacks"] if reference else {}
    rows = []
    for arm, entry in summary["arms"].items():
        attacks = entry["attacks"] or {"(no attack records)": None}
        for attack, stats in attacks.items():
            versus = reference_for(ref_attacks, attack) if reference and stats else None
            ref = ref_attacks.get(versus) if versus else None
            delta = "–"
            if ref and stats and "psnr_mean" in stats and "psnr_mean" in ref and arm != reference:
                delta = f"{stats['psnr_mean'] - ref['psnr_mean']:+.2f}" + (f" (vs {versus})" if versus != attack else "")
            reading = judge(stats, ref, arm == reference) if stats and reference else "–"
            rows.append({"arm": arm, "attack": attack,
                         "cells": [*stat_cells(stats), fmt(entry["accuracy_final"], 3), delta, reading or "–"]})
    return rows


def stat_cells(stats: dict[str, Any] | None, columns: Sequence[tuple[str, str, int]] = STAT_COLUMNS) -> list[str]:
    """The per-attack statistics as text, one per column; dashes where there is no value."""
    stats = stats or {}
    return [fmt(stats.get(key), digits) for _, key, digits in columns]


def fmt(value: Any, digits: int) -> str:
    """A number with ``digits`` decimals, or a dash where there is none."""
    return "–" if value is None else f"{value:.{digits}f}"


# --------------------------------------------------------------------------- plots


def plots(summary: dict[str, Any], records: list[AuditRecord], rounds: dict[str, list[dict]],
          seeds: list[Path] | None = None) -> list[dict[str, str]]:
    """The figures of the page (PNG data URIs) with their alt text and caption; empty ones left out.

    ``seeds``: the run directories of every seed of a multi-seed run, for the accuracy curves' bands.
    """
    by_seed = [{arm: read_metrics(path, arm) for arm in summary["arms"]} for path in seeds] if seeds else [rounds]
    found = [(accuracy_figure({arm: [r[arm] for r in by_seed] for arm in summary["arms"]}),
              "test accuracy over rounds, all arms",
              "Test top-1 accuracy of the global model after each round" + (
                  f": mean and 95% band over {len(seeds)} seeds." if seeds else "."))]
    leakage = {arm: {attack: leakage_by_round(records, arm, attack) for attack in entry["attacks"]}
               for arm, entry in summary["arms"].items()}
    top = psnr_axis_top(leakage)
    for arm, series in leakage.items():
        found.append((arm_figure(arm, series, rounds[arm], top), f"arm {arm}: leakage and accuracy",
                      f"Arm {arm}: mean PSNR of each attack (left, 0 to {top:.0f} dB, the same scale for every arm) "
                      "and test top-1 (right) per round."))
    return [{"uri": uri, "alt": alt, "caption": caption} for uri, alt, caption in found if uri is not None]


def sibling_seeds(run_dir: Path) -> list[Path] | None:
    """Every seed's run directory when ``run_dir`` is one seed of a multi-seed run (``OUT/seed-S``)."""
    from ..federation.rundir import read_seeds, seed_dirs

    parent = run_dir.resolve().parent
    if not run_dir.resolve().name.startswith("seed-") or not read_seeds(parent):
        return None
    found = list(seed_dirs(parent).values())
    return found if len(found) > 1 else None


def _figure(width: float = 8.0, height: float = 3.6) -> Any:
    # The object API with an explicit Agg canvas: no pyplot global state, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _round_axis(ax: Any) -> None:
    """Rounds are whole numbers: no 1.25 ticks."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _png_uri(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def accuracy_note(resolved: dict[str, dict[str, Any]], rounds: dict[str, list[dict]]) -> str:
    """What the accuracy plot can show: with few test images or rounds, a trend is noise."""
    limits = {(arm.get("data") or {}).get("test_limit") for arm in resolved.values()}
    images = max(limits) if limits and None not in limits else None
    count = max((len(rows) for rows in rounds.values()), default=0)
    parts = []
    if images is not None:
        margin = 100 * 1.96 * (0.25 / images) ** 0.5
        parts.append(f"Accuracy is measured on {images} test images: a 95% margin of up to ±{margin:.0f} points per "
                     "round.")
        if images < MEASURABLE_TEST_IMAGES or count < 5:
            parts.append(f"This run ({count} round(s)) is too small to measure accuracy: differences between arms "
                         "or rounds within that margin are noise.")
    return " ".join(parts)


def accuracy_figure(rounds: dict[str, list[list[dict]]]) -> str | None:
    """Test accuracy over rounds, one line per arm (arm -> one list of rounds per seed): with several seeds
    their mean and 95% t band; None when no arm has a round."""
    from ..scoring.stats import curve_band

    series = {arm: [s for s in ([(r["round"], r["accuracy"]) for r in rows if r.get("accuracy") is not None]
                                for rows in runs) if s] for arm, runs in rounds.items()}
    if not any(series.values()):
        return None
    figure = _figure()
    ax = figure.add_subplot()
    for arm, runs in series.items():
        if runs:
            steps, mean, low, high = curve_band(runs)
            (line,) = ax.plot(steps, mean, marker="o", label=arm)
            if len(runs) > 1:
                ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.15, linewidth=0)
    ax.set(xlabel="round", ylabel="test top-1", title="Test accuracy per arm", ylim=(0, 1))  # the whole scale
    _round_axis(ax)
    ax.legend()
    ax.grid(alpha=0.3)
    return _png_uri(figure)


def psnr_axis_top(leakage: dict[str, dict[str, list[tuple[int, float]]]]) -> float:
    """The top of the PSNR axis every arm's figure shares (arm -> attack -> points): the run's highest PSNR
    rounded up to 10 dB (scores are capped at 100), at least ``MIN_PSNR_TOP``: a few dB of noise do not fill
    the plot, and arms read on one scale."""
    highest = max((value for series in leakage.values() for points in series.values() for _, value in points),
                  default=0.0)
    return 10.0 * math.ceil(max(highest, MIN_PSNR_TOP) / 10.0)


def arm_figure(arm: str, leakage: dict[str, list[tuple[int, float]]], rounds: list[dict],
               psnr_top: float = 100.0) -> str | None:
    """Mean PSNR per attack (left axis, 0 to ``psnr_top``) and test accuracy (right axis) over rounds; None
    when empty."""
    accuracy = [(r["round"], r["accuracy"]) for r in rounds if r.get("accuracy") is not None]
    if not accuracy and not any(leakage.values()):
        return None
    figure = _figure()
    ax = figure.add_subplot()
    for attack, points in leakage.items():
        if points:
            ax.plot(*zip(*points), marker="o", label=f"{attack} PSNR")
    ax.set(xlabel="round", ylabel="mean PSNR (dB)", title=f"Arm {arm}: leakage and accuracy", ylim=(0, psnr_top))
    _round_axis(ax)
    ax.grid(alpha=0.3)
    right = ax.twinx()
    if accuracy:
        right.plot(*zip(*accuracy), color="black", linestyle="--", marker="s", label="test top-1")
    right.set(ylabel="test top-1", ylim=(0, 1))
    handles = [h for axis in (ax, right) for h in axis.get_legend_handles_labels()[0]]
    if handles:  # outside the axes: two y-scales leave no reliably empty corner
        figure.legend(handles=handles, loc="outside right upper")
    return _png_uri(figure)


# --------------------------------------------------------------------------- picture grids


def grids(run_dir: Path, summary: dict[str, Any], records: list[AuditRecord]) -> list[dict[str, Any]]:
    """Per arm and attack with stored reconstructions, up to GRID_CELLS cells spread over the rounds."""
    found = []
    for arm, entry in summary["arms"].items():
        for attack in entry["attacks"]:
            shown = [r for r in records if r.arm == arm and r.attack == attack and r.source == SERVER
                     and r.status == SCORED and r.image]
            if shown:
                found.append({"arm": arm, "attack": attack, "cells": [_cell(run_dir, r) for r in spread(shown, GRID_CELLS)]})
    return found


def spread(records: Sequence[AuditRecord], count: int) -> list[AuditRecord]:
    """Up to ``count`` records evenly spaced over (round, client), so early and late rounds both show."""
    ordered = sorted(records, key=lambda r: (r.round, r.partition_id))
    picks = np.unique(np.linspace(0, len(ordered) - 1, num=min(count, len(ordered))).round().astype(int))
    return [ordered[i] for i in picks]


def _cell(run_dir: Path, record: AuditRecord) -> dict[str, Any]:
    """The reconstruction, the truth where stored (a None uri: missing or not a PNG), and a caption."""
    psnr = record.metrics.get("psnr")
    caption = f"round {record.round}, client {record.partition_id}" + (
        f", PSNR {psnr:.1f} dB" if isinstance(psnr, (int, float)) else "")
    images = [{"uri": image_uri(run_dir, record.image), "label": "reconstruction"}]
    if record.truth_image:
        images.append({"uri": image_uri(run_dir, record.truth_image), "label": "truth"})
    return {"images": images, "caption": caption}


def image_uri(run_dir: Path, relative: str | None) -> str | None:
    """A stored PNG as a data URI; None when it is missing, not a PNG, or outside the image store
    (a record must not make the report embed an arbitrary file)."""
    if not relative:
        return None
    root = (run_dir / "audit" / "images").resolve()
    path = (run_dir / relative).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        return None
    data = path.read_bytes()
    if not data.startswith(PNG_MAGIC):
        return None
    return "data:image/png;base64," + base64.b64encode(data).decode()


def _read_text(path: Path) -> str:
    return path.read_text() if path.exists() else "(missing)"
