"""The dishonest server's imprint attack against batch size and width, ViT and MJP side by side.

CIFAR-10 test images at 32 px (from the shared data folder), one float32 FedSGD gradient of the planted
model; the server's thresholds from its own images (the public CIFAR-10 training split, or the built-in
photographs with ``--server photos``). ``patches_exact``: share of the batch's patches recovered at >= 40 dB;
``patches_placed``: recovered at their own position (MJP: only unshuffled patches can be); ``in_image``: share
of the exact patches of the assembled images that sit in their own image (the planted image signature); PSNR
and SSIM of the assembled images, matched one-to-one to the batch. Seconds to plant (once per model) and per
attack (decoding one reply), with the load average: the machine is shared.

A second table says what the image signature costs where the patch does not fit the channels (ViT-S/16 at
224 px: the patch is written as its projection onto the server's top principal directions, 8 fewer with the
signature): patches of the ImageNet samples through either projection.

    python -m bench.imprint [--batches 1 4 8 16 32] [--models vit_tiny_patch4_32 ...] [--server cifar]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import timm
import torch
from rich.console import Console
from rich.table import Table

import fedmjp.models  # noqa: F401  (registers the models)
from fedmjp.attacks import NotApplicable, Observation
from fedmjp.attacks.imprint import SIGNATURE, Imprint, ImprintLayout, server_images
from fedmjp.scoring.batch_metrics import align_batch, patch_recovery, patches_in_image
from fedmjp.scoring.metrics import leakage_metrics
from fedmjp.data.loading import load_dataset
from fedmjp.federation.train import compute_gradient, seed_jigsaw

from ._report import write_markdown

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")
CIFAR = os.path.join(SHARED, "cifar10-subset")
IMAGENET = os.path.join(SHARED, "imagenet-samples")
MJP_RATIO = 0.25


def arms(width: str) -> list[tuple[str, str, dict]]:
    return [("ViT", width, {}), ("MJP 0.25", f"mjp_{width}", {"mjp_ratio": MJP_RATIO})]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8, 16, 32])
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
    for column in ("model", "arm", "batch", "patches_exact", "patches_placed", "unshuffled", "in_image", "PSNR",
                   "SSIM", "plant s", "attack s", "load avg"):
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
                    table.add_row(width, label, str(batch), "n/a", "n/a", f"{unshuffled:.2f}", "n/a", "n/a", "n/a",
                                  f"{plant_s:.1f}", "-", load)
                    console.print(f"  {label} batch {batch}: {error}")
                    continue
                scores = patch_recovery(rec.patches, rec.patch_positions, images, 4)
                in_image = patches_in_image(rec.images, images, 4)
                scores |= {"in_image": float("nan") if in_image is None else in_image}
                scores |= leakage_metrics(align_batch(rec.images, images).clamp(0, 1), images, lpips=False)
                table.add_row(width, label, str(batch), f"{scores['patches_exact']:.3f}",
                              f"{scores['patches_placed']:.3f}", f"{unshuffled:.2f}", f"{scores['in_image']:.3f}",
                              f"{scores['psnr']:.1f}", f"{scores['ssim']:.3f}", f"{plant_s:.1f}",
                              f"{rec.seconds:.2f}", load)
    console.print(table)
    tables = [table, signature_cost()]
    console.print(tables[1])
    console.print(f"written to {write_markdown('imprint', tables)}")


def signature_cost(name: str = "vit_small_patch16_224") -> Table:
    """Patches of the ImageNet samples through the projection the embedding writes, without and with the image
    signature's channels: share at >= 40 dB and mean PSNR."""
    from fedmjp.attacks.imprint import principal_patches
    from fedmjp.audit.attack_case import load_image
    from fedmjp.models import from_model_input, to_model_input
    from fedmjp.models.patches import flat_tiles
    from fedmjp.scoring.metrics import psnr

    model = timm.create_model(name, depth=2)
    layout = ImprintLayout.of(model)
    files = sorted(Path(IMAGENET).glob("*.JPEG")) if os.path.isdir(IMAGENET) else []
    own = server_images(224, 64)
    table = Table(title=f"what the {SIGNATURE}-channel image signature costs {name}'s patch projection "
                        "(ImageNet samples; basis from 64 built-in photos)")
    for column in ("patch channels", "patches >= 40 dB", "mean patch PSNR"):
        table.add_column(column, justify="right")
    if not files:
        table.add_row("skipped", f"{IMAGENET} not present", "")
        return table
    images = torch.stack([load_image(path, 224) for path in files])
    truth = flat_tiles(images, 16).reshape(-1, layout.pixels)
    normalised = flat_tiles(to_model_input(model, images), 16).reshape(-1, layout.pixels)
    for values in (layout.values + SIGNATURE, layout.values):
        basis = principal_patches(model, own, values)
        projected = (normalised @ basis @ basis.T).reshape(-1, 3, 16, 16)
        value = psnr(from_model_input(model, projected).clamp(0, 1).flatten(1), truth)
        table.add_row(f"{values} of {layout.pixels}" + (" (with the signature)" if values == layout.values else ""),
                      f"{float((value >= 40).float().mean()):.3f}", f"{float(value.mean()):.1f}")
    return table


if __name__ == "__main__":
    main(sys.argv[1:])
