"""``fedmjp audit``: the leakage summary of a run directory, in the terminal and as an HTML report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from .app import app, user_errors
from ..errors import InputError

out = Console()


@app.command("audit")
@user_errors
def audit(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by `fedmjp simulate`.", show_default=False)],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the summary as one JSON object on stdout, nothing else.")
    ] = False,
    html: Annotated[
        Optional[Path],
        typer.Option("--html", help="Where to write the HTML report (default RUN_DIR/report.html); owner-only."),
    ] = None,
) -> None:
    """Summarise the leakage of every arm and attack in RUN_DIR (a run directory written by `fedmjp simulate`)
    and (re)write its HTML report."""
    # Imported here: the audit pulls in torch and matplotlib, which `fedmjp --help` should not wait for.
    from ..audit.report import write_report
    from ..audit.summary import summarize

    summary = summarize(run_dir)
    try:
        report = write_report(run_dir, summary, html)
    except OSError as exc:  # a directory, a read-only place: the user's to fix, not a traceback
        raise InputError(f"{html or run_dir / 'report.html'}: cannot write the report ({exc.strerror})") from None
    if as_json:
        # allow_nan=False: the summary promises strict JSON, so a NaN that slipped in is a bug, not output.
        print(json.dumps({**summary, "report": str(report)}, allow_nan=False))
        return
    for arm, entry in summary["arms"].items():
        out.print(arm_table(arm, entry))
        if through := entry.get("secure_aggregation"):
            typer.echo(f"arm {arm}: the server attacked SecAgg+ aggregates of "
                       f"{', '.join(map(str, through['clients']))} client(s); each of the {through['records']} "
                       f"record(s) is one client's receipt for the reconstruction of its own batch from the sum")
        if guard := entry.get("guard"):
            typer.echo(f"arm {arm}: client guard: {guard['count']} record(s), {guard['judged']} judged "
                       f"({guard['judged_by_fallback']} by a fallback), {guard['withheld']} withheld "
                       f"({guard['withheld_unjudged']} unjudged), {guard['noised']} noised, "
                       f"{guard['sent_unjudged']} sent unjudged")
        if check := entry.get("model_check"):
            typer.echo(f"arm {arm}: client model check: {check['checked']} model(s) checked, {check['refused']} "
                       f"refused ({check['refused_planted']} planted, {check['refused_honest']} honest)")
    typer.echo(f"report: {report}")


def arm_table(arm: str, entry: dict[str, Any]) -> Table:
    """One row per attack; the arm's final accuracy in the title and skipped records in the caption, so
    the numbers fit an 80-column terminal without truncation."""
    from ..audit.report import STAT_COLUMNS, fmt, stat_cells

    # The report's columns up to "leakage dB" (n/a and failed go in the caption), headers on two lines.
    columns = [column for column in STAT_COLUMNS if column[1] not in ("not_applicable", "failed")]
    accuracy = fmt(entry["accuracy_final"], 3)
    skipped = [f"{attack}: {stats['not_applicable']} not applicable, {stats['failed']} failed"
               for attack, stats in entry["attacks"].items() if stats["not_applicable"] or stats["failed"]]
    table = Table(title=f"arm {arm}: test top-1 {accuracy} after {entry['rounds']} round(s)",
                  caption="; ".join(skipped) or None)
    table.add_column("attack", overflow="fold")
    for header, _, _ in columns:
        table.add_column(header.replace(" ", "\n"), justify="right", no_wrap=True)
    if not entry["attacks"]:
        table.add_row("(no attack records)", *stat_cells(None, columns))
    for attack, stats in entry["attacks"].items():
        table.add_row(attack, *stat_cells(stats, columns))
    return table
