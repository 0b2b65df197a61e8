"""Benchmark output: tables kept as text in bench/results/NAME.md beside the terminal print."""

from __future__ import annotations

import datetime as dt
import platform
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

RESULTS = Path(__file__).resolve().parent / "results"


def write_markdown(name: str, tables: list[Table]) -> Path:
    recorder = Console(record=True, width=140, file=open("/dev/null", "w"))
    for table in tables:
        recorder.print(table)
    machine = f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"
    body = f"# {name}\n\n{dt.date.today()} on {machine}\n\n```\n{recorder.export_text()}```\n"
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.md"
    path.write_text(body)
    return path


def write_page(name: str, title: str, note: str, lines: list[str]) -> Path:
    """bench/results/NAME.md: a title, the setting and load (``note``) and a markdown table, also printed."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.md"
    path.write_text(f"# {title}\n\n{note}\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))
    return path
