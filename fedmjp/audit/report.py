"""The audit report: one self-contained HTML page per run directory.

Everything is inline (figures and reconstructions as base64 PNG data URIs, CSS, one small script), and a
Content-Security-Policy forbids anything else, so the page opens from ``file://`` with no server and never
fetches. It shows reconstructions, which are private data, so it is written owner-only (0600).
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..rundir import atomic_write
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

# Counts the images the browser could not decode, so a headless browser can check the page from its DOM.
IMAGE_CHECK = """
window.addEventListener("load", function () {
  var images = document.images, broken = 0;
  for (var i = 0; i < images.length; i++) {
    if (!images[i].complete || images[i].naturalWidth === 0) { broken++; }
  }
  document.body.dataset.images = String(images.length);
  document.body.dataset.brokenImages = String(broken);
});
"""

STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1200px;
       padding: 0 1rem; color: #1d1d1f; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: .6rem 0; } th, td { padding: .25rem .6rem; border-bottom: 1px solid #eee; }
th { background: #f5f5f7; text-align: left; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.meta td:first-child { color: #666; } .note { color: #666; }
.grid { display: flex; flex-wrap: wrap; gap: .8rem; } figure { margin: 0; }
.cell { border: 1px solid #e3e3e3; border-radius: 6px; padding: .4rem; background: #fafafa; }
.cell img { height: 96px; image-rendering: pixelated; display: block; }
.pair { display: flex; gap: .3rem; } figcaption { font-size: .8rem; color: #444; }
img.plot { max-width: 100%; } figure.plot { margin: 1rem 0 1.6rem; }
pre { background: #f5f5f7; padding: 1rem; overflow-x: auto; font-size: .8rem; }
"""

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"


def write_report(run_dir: Path, summary: dict[str, Any], path: Path | None = None) -> Path:
    """Write the report (atomically, 0600) to ``path`` or RUN_DIR/report.html; return where."""
    target = Path(path) if path is not None else Path(run_dir) / REPORT_NAME
    atomic_write(target, render_report(Path(run_dir), summary).encode(), FILE_MODE)
    return target


def render_report(run_dir: Path, summary: dict[str, Any]) -> str:
    """The whole page as a string."""
    records = read_records(run_dir)
    rounds = {arm: read_metrics(run_dir, arm) for arm in summary["arms"]}
    title = f"fedmjp leakage audit: {summary.get('scenario') or run_dir.name}"
    body = [
        f"<h1>{_e(title)}</h1>",
        _meta_table(run_dir, summary),
        "<h2>Summary</h2>",
        "<p class='note'>Server-side attacks on the updates clients sent. PSNR and SSIM: higher means more "
        "leakage; max is the worst case over rounds and clients. Leakage: PSNR gained over the attack's "
        "data-free starting image.</p>",
        _summary_table(summary),
        _guard_section(summary),
        "<h2>Leakage and accuracy over rounds</h2>",
        _plots(summary, records, rounds),
        "<h2>Reconstructions</h2>",
        _grids(run_dir, summary, records),
        "<h2>Resolved scenario</h2>",
        f"<pre>{_e(_read_text(run_dir / 'scenario.yaml'))}</pre>",
    ]
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{_e(title)}</title><style>{STYLE}</style><script>{IMAGE_CHECK}</script></head>\n"
        "<body>\n" + "\n".join(part for part in body if part) + "\n</body></html>\n"
    )


# --------------------------------------------------------------------------- header and tables


def _meta_table(run_dir: Path, summary: dict[str, Any]) -> str:
    packages = ", ".join(f"{name} {version}" for name, version in read_versions(run_dir).items())
    rows = [("scenario", summary.get("scenario") or "unnamed"), ("run directory", str(run_dir.resolve())),
            ("versions", packages)]
    cells = "".join(f"<tr><td>{_e(key)}</td><td>{_e(str(value))}</td></tr>" for key, value in rows)
    return f"<table class='meta'>{cells}</table>"


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


def _summary_table(summary: dict[str, Any]) -> str:
    headers = ("arm", "attack", *(header for header, _, _ in STAT_COLUMNS), "test top-1")
    head = "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in headers) + "</tr>"
    rows = []
    for arm, entry in summary["arms"].items():
        attacks = entry["attacks"] or {"(no attack records)": None}
        for attack, stats in attacks.items():
            cells = [attack, *stat_cells(stats), fmt(entry["accuracy_final"], 3)]
            rows.append(f"<tr><td>{_e(arm)}</td><td>{_e(cells[0])}</td>"
                        + "".join(f"<td class='num'>{_e(c)}</td>" for c in cells[1:]) + "</tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def stat_cells(stats: dict[str, Any] | None, columns: Sequence[tuple[str, str, int]] = STAT_COLUMNS) -> list[str]:
    """The per-attack statistics as text, one per column; dashes where there is no value."""
    stats = stats or {}
    return [fmt(stats.get(key), digits) for _, key, digits in columns]


def fmt(value: Any, digits: int) -> str:
    """A number with ``digits`` decimals, or a dash where there is none."""
    return "–" if value is None else f"{value:.{digits}f}"


def _guard_section(summary: dict[str, Any]) -> str:
    guarded = {arm: entry["guard"] for arm, entry in summary["arms"].items() if "guard" in entry}
    if not guarded:
        return ""
    rows = "".join(
        f"<tr><td>{_e(arm)}</td><td class='num'>{g['count']}</td><td class='num'>{g['withheld']}</td>"
        f"<td class='num'>{g['noised']}</td></tr>"
        for arm, g in guarded.items()
    )
    return ("<h2>Client guard</h2><p class='note'>What clients measured on their own updates.</p>"
            "<table><tr><th>arm</th><th>records</th><th>withheld</th><th>noised</th></tr>" + rows + "</table>")


# --------------------------------------------------------------------------- plots


def _plots(summary: dict[str, Any], records: list[AuditRecord], rounds: dict[str, list[dict]]) -> str:
    parts = [_plot(accuracy_figure(rounds), "test accuracy over rounds, all arms",
                   "Test top-1 accuracy of the global model after each round.")]
    for arm, entry in summary["arms"].items():
        series = {attack: leakage_by_round(records, arm, attack) for attack in entry["attacks"]}
        parts.append(_plot(arm_figure(arm, series, rounds[arm]), f"arm {arm}: leakage and accuracy",
                           f"Arm {arm}: mean PSNR of each attack (left) and test top-1 (right) per round."))
    return "\n".join(part for part in parts if part) or "<p class='note'>No rounds recorded yet.</p>"


def _plot(uri: str | None, alt: str, caption: str) -> str:
    if uri is None:
        return ""
    return (f"<figure class='plot'><img class='plot' alt='{_e(alt)}' src='{uri}'>"
            f"<figcaption>{_e(caption)}</figcaption></figure>")


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


def accuracy_figure(rounds: dict[str, list[dict]]) -> str | None:
    """Test accuracy over rounds, one line per arm; None when no arm has a round."""
    series = {arm: [(r["round"], r["accuracy"]) for r in rows if r.get("accuracy") is not None]
              for arm, rows in rounds.items()}
    if not any(series.values()):
        return None
    figure = _figure()
    ax = figure.add_subplot()
    for arm, points in series.items():
        if points:
            ax.plot(*zip(*points), marker="o", label=arm)
    ax.set(xlabel="round", ylabel="test top-1", title="Test accuracy per arm")
    _round_axis(ax)
    ax.legend()
    ax.grid(alpha=0.3)
    return _png_uri(figure)


def arm_figure(arm: str, leakage: dict[str, list[tuple[int, float]]], rounds: list[dict]) -> str | None:
    """Mean PSNR per attack (left axis) and test accuracy (right axis) over rounds; None when empty."""
    accuracy = [(r["round"], r["accuracy"]) for r in rounds if r.get("accuracy") is not None]
    if not accuracy and not any(leakage.values()):
        return None
    figure = _figure()
    ax = figure.add_subplot()
    for attack, points in leakage.items():
        if points:
            ax.plot(*zip(*points), marker="o", label=f"{attack} PSNR")
    ax.set(xlabel="round", ylabel="mean PSNR (dB)", title=f"Arm {arm}: leakage and accuracy")
    _round_axis(ax)
    ax.grid(alpha=0.3)
    right = ax.twinx()
    if accuracy:
        right.plot(*zip(*accuracy), color="black", linestyle="--", marker="s", label="test top-1")
    right.set_ylabel("test top-1")
    handles = [h for axis in (ax, right) for h in axis.get_legend_handles_labels()[0]]
    if handles:  # outside the axes: two y-scales leave no reliably empty corner
        figure.legend(handles=handles, loc="outside right upper")
    return _png_uri(figure)


# --------------------------------------------------------------------------- picture grids


def _grids(run_dir: Path, summary: dict[str, Any], records: list[AuditRecord]) -> str:
    sections = []
    for arm, entry in summary["arms"].items():
        for attack in entry["attacks"]:
            shown = [r for r in records if r.arm == arm and r.attack == attack and r.source == SERVER
                     and r.status == SCORED and r.image]
            if shown:
                cells = "".join(_cell(run_dir, r) for r in spread(shown, GRID_CELLS))
                sections.append(f"<h3>{_e(arm)} / {_e(attack)}</h3><div class='grid'>{cells}</div>")
    if not sections:
        return "<p class='note'>No stored reconstructions.</p>"
    return ("<p class='note'>Each cell: the reconstruction (left) and, where the scenario opted in to storing "
            "ground truth (simulation only), the client's true batch (right).</p>" + "\n".join(sections))


def spread(records: Sequence[AuditRecord], count: int) -> list[AuditRecord]:
    """Up to ``count`` records evenly spaced over (round, client), so early and late rounds both show."""
    ordered = sorted(records, key=lambda r: (r.round, r.partition_id))
    picks = np.unique(np.linspace(0, len(ordered) - 1, num=min(count, len(ordered))).round().astype(int))
    return [ordered[i] for i in picks]


def _cell(run_dir: Path, record: AuditRecord) -> str:
    psnr = record.metrics.get("psnr")
    caption = f"round {record.round}, client {record.partition_id}" + (
        f", PSNR {psnr:.1f} dB" if isinstance(psnr, (int, float)) else "")
    images = [_img(run_dir, record.image, "reconstruction")]
    if record.truth_image:
        images.append(_img(run_dir, record.truth_image, "truth"))
    return (f"<figure class='cell'><div class='pair'>{''.join(images)}</div>"
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def _img(run_dir: Path, relative: str | None, label: str) -> str:
    uri = image_uri(run_dir, relative)
    if uri is None:
        return f"<span class='note'>{_e(label)}: missing or not a PNG</span>"
    return f"<img alt='{_e(label)}' title='{_e(label)}' src='{uri}'>"


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


def _e(text: str) -> str:
    return html.escape(text, quote=True)
