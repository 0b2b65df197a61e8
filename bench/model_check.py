"""The seconds the client's model check adds to a round, beside the round's training, side by side in one run.

For ViT-Ti/4 (32 px) and ViT-S/16 (224 px) at random init: the check on the weights alone (first round), with
history (the accepted weights), and with the client's batch of 8 (what the weights do to it), against one
FedSGD gradient of that batch and a FedAvg round of 5 local SGD steps. Images: the built-in public photographs
(the check's cost does not depend on what they show). Median of ``--repeats`` runs, with the load average.

    python -m bench.model_check [--repeats 5] [--models vit_tiny_patch4_32 vit_small_patch16_224]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import timm
import torch
from rich.console import Console
from rich.table import Table

import fedmjp.models  # noqa: F401  (registers the models)
from fedmjp.attacks.imprint import server_images
from fedmjp.defences.model_check import check_model
from fedmjp.federation.train import compute_gradient, local_update

from ._report import write_markdown

BATCH = 8
LOCAL_STEPS = 5


def median_seconds(run: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure(name: str, repeats: int) -> dict[str, float]:
    torch.manual_seed(0)
    model = timm.create_model(name)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    images = server_images(int(model.patch_embed.img_size[0]), BATCH)
    labels = torch.arange(BATCH) % 10

    def fedavg() -> None:
        model.load_state_dict(weights)
        local_update(model, [(images, labels)] * LOCAL_STEPS, lr=0.01)

    return {
        "weights": median_seconds(lambda: check_model(model, weights), repeats),
        "history": median_seconds(lambda: check_model(model, weights, weights), repeats),
        "batch": median_seconds(lambda: check_model(model, weights, weights, images), repeats),
        "fedsgd": median_seconds(lambda: compute_gradient(model, images, labels), repeats),
        "fedavg": median_seconds(fedavg, repeats),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--models", nargs="+", default=["vit_tiny_patch4_32", "vit_small_patch16_224"])
    args = parser.parse_args(argv or [])
    table = Table(title=f"model check seconds beside a round's training (batch {BATCH}, median of {args.repeats}, "
                        f"load average {os.getloadavg()[0]:.2f}, {torch.get_num_threads()} threads)")
    for column in ("model", "weights only", "+ history", "+ batch (all tests)", "FedSGD gradient",
                   f"FedAvg {LOCAL_STEPS} steps", "check / FedSGD", "check / FedAvg"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name in args.models:
        s = measure(name, args.repeats)
        table.add_row(name, *(f"{s[k]:.3f}" for k in ("weights", "history", "batch", "fedsgd", "fedavg")),
                      f"{s['batch'] / s['fedsgd']:.2f}x", f"{s['batch'] / s['fedavg']:.2f}x")
    console = Console()
    console.print(table)
    console.print(f"written: {write_markdown('model_check', [table])}")


if __name__ == "__main__":
    main()
