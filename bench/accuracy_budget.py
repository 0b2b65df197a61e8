"""The accuracy part's training budget: seconds per local step of each setting's model, side by side, and
the step time of the whole accuracy part extrapolated from it (arms x seeds x rounds x clients x local
steps over 2 cores). An extrapolation, not a measurement: it leaves out evaluation and Flower's start-up;
`fedmjp results` records the real wall time in provenance.json.
"""

from __future__ import annotations

import os
import time

import timm
import torch
from rich.console import Console
from rich.table import Table

import fedmjp.models  # noqa: F401  (registers the models)
from fedmjp.results.settings import DEFAULT_SCENARIO, load_part
from fedmjp.federation.train import loss_terms

from ._report import write_markdown

STEPS = int(os.environ.get("FEDMJP_BENCH_STEPS", "10"))
CORES = 2  # one simulated client per core (clients.cpus 1)


def step_seconds(arm: object) -> float:
    """Mean over STEPS AdamW steps on a batch of the arm's size, one thread (one Ray client)."""
    torch.manual_seed(0)
    model = timm.create_model(arm.model.name, **arm.model.create_kwargs())
    opt = torch.optim.AdamW(model.parameters(), lr=arm.training.lr)
    images, labels = torch.rand(arm.training.batch_size, 3, 32, 32), torch.randint(0, 10, (arm.training.batch_size,))
    for i in range(STEPS + 2):
        if i == 2:
            started = time.perf_counter()
        loss = loss_terms(model, images, labels).total
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (time.perf_counter() - started) / STEPS


def main() -> None:
    torch.set_num_threads(1)
    table = Table(title=f"accuracy part: local step time and extrapolated training time (load {os.getloadavg()[0]:.1f})")
    for column in ("setting", "model", "s / step", "vs full", "arms x seeds", "steps per arm", "extrapolated min"):
        table.add_column(column, justify="left" if column in ("setting", "model") else "right")
    full = None
    for setting in ("full", "quick"):
        scenario = load_part(DEFAULT_SCENARIO, setting, "accuracy", [], None)
        arm = next(iter(scenario.arms.values()))
        seconds = step_seconds(arm)
        full = full or seconds
        t, c = arm.training, arm.clients
        steps = t.rounds * c.sampled_per_round * (t.local_steps or 0)  # the settings fix local_steps
        runs = len(scenario.arms) * len(scenario.seeds or [arm.seed])
        kwargs = ", ".join(f"{k} {v}" for k, v in arm.model.kwargs.items())
        table.add_row(setting, f"{arm.model.name} ({kwargs})", f"{seconds:.3f}", f"{seconds / full:.2f}",
                      f"{len(scenario.arms)} x {runs // len(scenario.arms)}", str(steps),
                      f"{runs * steps * seconds / CORES / 60:.1f}")
    Console().print(table)
    write_markdown("accuracy_budget", [table])


if __name__ == "__main__":
    main()
