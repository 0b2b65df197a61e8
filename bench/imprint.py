"""The dishonest server's imprint attack against batch size and width, ViT and MJP side by side.

CIFAR-10 test images at 32 px (from the shared data folder), one float32 FedSGD gradient of the planted
model; the server's thresholds from its own images (the public CIFAR-10 training split, or the built-in
photographs with ``--server photos``). ``patches_exact``: share of the batch's patches recovered at >= 40 dB;
``patches_placed``: recovered at their own position (MJP: only unshuffled patches can be). Seconds to plant
(once per model) and per attack (decoding one reply), with the load average: the machine is shared.

    python -m bench.imprint [--batches 1 4 8 16 32 64] [--models vit_tiny_patch4_32 ...] [--server cifar]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import timm
import torch
from rich.console import Console
from rich.table import Table

import fedmjp.models  # noqa: F401  (registers the models)
from fedmjp.attacks import NotApplicable, Observation
from fedmjp.attacks.imprint import Imprint, server_images
from fedmjp.scoring.batch_metrics import patch_recovery
from fedmjp.data.loading import load_dataset
from fedmjp.federation.train import compute_gradient, seed_jigsaw

from ._report import write_markdown

CIFAR = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "cifar10-subset")
MJP_RATIO = 0.25


def arms(width: str) -> list[tuple[str, str, dict]]:
    return [("ViT", width, {}), ("MJP 0.25", f"mjp_{width}", {"mjp_ratio": MJP_RATIO})]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8, 16, 32, 64])
    parser.add_argument("--models", nargs="+", default=["vit_tiny_patch4_32", "vit_small_patch4_32"])
    parser.add_argument("--server", choices=["cifar", "photos"], default="cifar")
    parser.add_argument("--server-count", type=int, default=256)
    args = parser.parse_args(argv or [])
    console = Console()
    if not os.path.isdir(CIFAR):
        console.print(f"bench.imprint: skipped ({CIFAR} not present)")
        return
    test = load_dataset("imagefolder", "test", 32, root=CIFAR)
    order = torch.randperm(len(test), generator=torch.Generator().manual_seed(0))
    own = (server_images(32, args.server_count, source="imagefolder", root=CIFAR) if args.server == "cifar"
           else server_images(32, args.server_count))
    table = Table(title=f"imprint, one FedSGD gradient, CIFAR-10 test batch, thresholds from {args.server_count} "
                        f"{args.server} images")
    for column in ("model", "arm", "batch", "patches_exact", "patches_placed", "unshuffled", "plant s", "attack s",
                   "load avg"):
        table.add_column(column, justify="left" if column in ("model", "arm") else "right")
    for width in args.models:
        for label, name, kwargs in arms(width):
            torch.manual_seed(0)
            model = timm.create_model(name, **kwargs)
            attack = Imprint()
            started = time.perf_counter()
            weights = attack.plant(name, model.state_dict(), own, kwargs)
            plant_s = time.perf_counter() - started
            model.load_state_dict(weights)
            for batch in args.batches:
                index = order[:batch]
                images = torch.stack([test[int(i)][0] for i in index])
                labels = torch.tensor([test[int(i)][1] for i in index])
                if hasattr(model, "jigsaw_generator"):
                    seed_jigsaw(model, batch)
                result = compute_gradient(model, images, labels)
                obs = Observation(name, weights, result.tensors, num_examples=batch, model_kwargs=kwargs)
                jigsaw = result.jigsaws[0]
                unshuffled = 1.0 if jigsaw is None else 1 - float(jigsaw.mask.expand(batch, -1).float().mean())
                load = f"{os.getloadavg()[0]:.1f}"
                try:
                    rec = attack(obs)
                except NotApplicable as error:
                    table.add_row(width, label, str(batch), "n/a", "n/a", f"{unshuffled:.2f}", f"{plant_s:.1f}", "-",
                                  load)
                    console.print(f"  {label} batch {batch}: {error}")
                    continue
                scores = patch_recovery(rec.patches, rec.patch_positions, images, 4)
                table.add_row(width, label, str(batch), f"{scores['patches_exact']:.3f}",
                              f"{scores['patches_placed']:.3f}", f"{unshuffled:.2f}", f"{plant_s:.1f}",
                              f"{rec.seconds:.2f}", load)
                console.print(f"  {width} {label} batch {batch}: {scores}", highlight=False)
    console.print(table)
    console.print(f"written to {write_markdown('imprint', [table])}")


if __name__ == "__main__":
    main(sys.argv[1:])
