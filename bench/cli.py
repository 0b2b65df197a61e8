"""The CLI's own cost: wall time and peak memory of `fedmjp --help`, `--version` and `validate` as a user runs them
(a new interpreter each), median of 5, with the load average at the start.

`validate` runs twice per sample: once on an empty disk cache (what a first run on a machine pays: the data set is
read for its labels) and once on the cache that run filled.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ._report import write_markdown

ROOT = Path(__file__).resolve().parent.parent
RUNS = 5


# `python -m fedmjp ARGS` that writes its own peak resident memory (Linux's VmHWM: this program's, from its exec;
# a child's ru_maxrss would count the benchmark's pages it was forked with) to the file named by argv[1].
RUN_AND_REPORT = """import atexit, re, runpy, sys
out = sys.argv.pop(1)
def report():
    kib = re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1)
    open(out, "w").write(kib)
atexit.register(report)
sys.argv[0] = "fedmjp"
runpy.run_module("fedmjp", run_name="__main__", alter_sys=True)
"""


def measure(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and peak resident memory (MiB) of one `python -m fedmjp ARGS`."""
    with tempfile.NamedTemporaryFile() as peak:
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", RUN_AND_REPORT, peak.name, *args], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env=env, cwd=ROOT)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"fedmjp {' '.join(args)} failed")
        return seconds, int(Path(peak.name).read_text()) / 1024


def table() -> Table:
    load = os.getloadavg()[0]
    commands = {"--help": ["--help"], "--version": ["--version"],
                "validate ci-smoke": ["validate", "scenarios/ci-smoke.yaml"]}
    samples: dict[str, list[tuple[float, float]]] = {}
    for _ in range(RUNS):
        with tempfile.TemporaryDirectory() as cache:
            env = {**os.environ, "FEDMJP_CACHE_DIR": cache}
            for name, args in commands.items():
                label = f"{name} (empty cache)" if name.startswith("validate") else name
                samples.setdefault(label, []).append(measure(args, env))
            samples.setdefault("validate ci-smoke (warm cache)", []).append(measure(commands["validate ci-smoke"], env))
    result = Table(title=f"fedmjp's CLI, median of {RUNS} runs (load average {load:.2f} at the start)")
    for column in ("command", "wall s", "peak MiB"):
        result.add_column(column, justify="left" if column == "command" else "right")
    for label, runs in samples.items():
        result.add_row(label, f"{statistics.median(s for s, _ in runs):.2f}",
                       f"{statistics.median(m for _, m in runs):.0f}")
    return result


def main() -> None:
    tables = [table()]
    for t in tables:
        Console().print(t)
    write_markdown("cli", tables)


if __name__ == "__main__":
    main()
