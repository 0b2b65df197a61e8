"""The results figures (matplotlib's object API on an Agg canvas: no pyplot state, no display)."""

from __future__ import annotations

import math
from typing import Any

from ..audit.summary import leakage_by_round
from .judging import COLUMNS, accuracy_of, ordered_attacks
from .settings import REFERENCE
from ..scoring.stats import curve_band


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def leakage_accuracy_figure(table: list[dict[str, Any]]) -> Any:
    """PSNR, SSIM and patch-matched PSNR (y) against final test accuracy (x), a point per arm and attack."""
    points = [r for r in table if r["accuracy"] is not None and r["psnr_mean"] is not None]
    if not points:
        return None
    figure = _figure(14, 4.6)
    axes = figure.subplots(1, 3)
    attacks = list(dict.fromkeys(r["attack"] for r in points))
    markers = "os^Dv<>P*"
    for ax, (label, key, _) in zip(axes, (COLUMNS[0], COLUMNS[2], COLUMNS[3])):
        for i, attack in enumerate(attacks):
            mine = [r for r in points if r["attack"] == attack and r[key] is not None]
            ax.scatter([r["accuracy"] for r in mine], [r[key] for r in mine], marker=markers[i % len(markers)],
                       label=attack, s=40)
            for r in mine:
                ax.annotate(r["arm"], (r["accuracy"], r[key]), fontsize=7, xytext=(3, 2), textcoords="offset points")
        ax.set_xlabel("final test top-1 (accuracy part)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(title="attack", fontsize=8)
    figure.suptitle("Leakage (higher: more leaked) against accuracy, per arm")
    return figure


def rounds_figure(data: dict[str, Any]) -> Any:
    """Mean PSNR per round of every arm, one panel per attack."""
    records = data["records"]
    arms = data["privacy"]["arms"]
    attacks = ordered_attacks({a: None for entry in arms.values() for a in entry["attacks"]})
    series = {attack: {arm: leakage_by_round(records, arm, attack) for arm in arms} for attack in attacks}
    attacks = [a for a in attacks if any(series[a].values())]
    if not attacks:
        return None
    from matplotlib.ticker import MaxNLocator

    figure = _figure(4.8 * len(attacks), 4.2)
    axes = figure.subplots(1, len(attacks), squeeze=False)[0]
    for ax, attack in zip(axes, attacks):
        for arm, points in series[attack].items():
            if points:
                ax.plot([r for r, _ in points], [v for _, v in points], marker="o", label=arm)
        ax.set_title(attack)
        ax.set_xlabel("round")
        ax.set_ylabel("PSNR mean (dB)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=7, loc="best")
    figure.suptitle("Leakage over rounds (privacy part)")
    return figure


def strength_of(arm: dict[str, Any]) -> tuple[str, float] | None:
    """(family, strength) of a single-knob defence arm; the undefended ViT is strength 0 of every family."""
    model, defence = arm.get("model") or {}, arm.get("defence") or {}
    mjp = model.get("mjp") or {}
    if str(model.get("name", "")).startswith("mjp_") and mjp.get("mode", "mjp") == "mjp" \
            and mjp.get("apply_prob", 1.0) == 1.0:
        return "MJP ratio", float(mjp.get("ratio", 0.1))
    if defence.get("dp"):
        dp = defence["dp"]
        return "local DP noise σ", (dp.get("sensitivity") or dp["clipping_norm"]) * math.sqrt(
            2 * math.log(1.25 / dp["delta"])) / dp["epsilon"]
    if defence.get("prune"):
        return "pruned fraction", float(defence["prune"])
    return None


def strength_figure(data: dict[str, Any], table: list[dict[str, Any]]) -> Any:
    """Leakage (left axis, per attack) and accuracy (right axis) against each defence's strength."""
    families: dict[str, list[tuple[float, str]]] = {}
    for arm, cfg in data["arms"].items():
        found = strength_of(cfg or {})
        if found:
            families.setdefault(found[0], []).append((found[1], arm))
    if not families:
        return None
    figure = _figure(5 * len(families), 4.2)
    axes = figure.subplots(1, len(families), squeeze=False)[0]
    by = {(r["arm"], r["attack"]): r for r in table}
    attacks = list(dict.fromkeys(r["attack"] for r in table))
    for ax, (family, members) in zip(axes, families.items()):
        members = sorted(members + ([(0.0, REFERENCE)] if REFERENCE in data["arms"] else []))
        xs = [x for x, _ in members]
        for attack in attacks:
            ys = [(by.get((arm, attack)) or {}).get("psnr_mean") for _, arm in members]
            if any(y is not None for y in ys):
                ax.plot(xs, [math.nan if y is None else y for y in ys], marker="o", label=f"PSNR, {attack}")
        ax.set_xlabel(family)
        ax.set_ylabel("PSNR mean (dB)")
        if family.startswith("local DP"):
            ax.set_xscale("symlog", linthresh=min(x for x in xs if x > 0) if any(xs) else 1e-4)
        twin = ax.twinx()
        acc = [accuracy_of(data, arm) for _, arm in members]
        twin.plot(xs, [math.nan if a is None else a for a in acc], color="black", linestyle="--", marker="s",
                  label="test top-1")
        twin.set_ylabel("test top-1 (dashed)")
        twin.set_ylim(0, 1)  # the whole range: a free axis makes a 0.004 difference look like a cliff
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper right")
    figure.suptitle("Leakage and accuracy against defence strength (0: standard ViT)")
    return figure


def accuracy_curves_figure(curves: dict[int, dict[str, list[dict[str, Any]]]]) -> Any:
    """Test top-1 over rounds per arm: the mean over seeds and its 95% t band."""
    arms = list(dict.fromkeys(arm for by_arm in curves.values() for arm in by_arm))
    series = {arm: [[(r["round"], r["accuracy"]) for r in by_arm.get(arm, []) if r.get("accuracy") is not None]
                    for by_arm in curves.values()] for arm in arms}
    series = {arm: [s for s in runs if s] for arm, runs in series.items()}
    if not any(series.values()):
        return None
    from matplotlib.ticker import MaxNLocator

    figure = _figure(8, 4.6)
    ax = figure.add_subplot()
    for arm, runs in series.items():
        if not runs:
            continue
        rounds, mean, low, high = curve_band(runs)
        (line,) = ax.plot(rounds, mean, marker="o", markersize=3, label=f"{arm} ({len(runs)} seeds)")
        ax.fill_between(rounds, low, high, color=line.get_color(), alpha=0.15, linewidth=0)
    ax.set(xlabel="round", ylabel="test top-1", title="Test accuracy over rounds: mean and 95% band over seeds")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    figure.legend(fontsize=7, loc="outside right upper")
    return figure
