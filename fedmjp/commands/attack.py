"""``fedmjp attack``: invert one client gradient on one image or a seeded batch and score the leak."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .app import app, user_errors
from ..catalog import attack_names
from ..errors import InputError

out = Console()


def _finite(value: float) -> float | None:
    """JSON has no NaN: a metric that could not be computed is null."""
    return value if math.isfinite(value) else None


IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff"}


def _output_name(image: Path, model: str, attack: str, ratio: float, seed: int, batch: int) -> str:
    stem = image.stem if batch == 1 else f"{image.name}-b{batch}"
    return f"{stem}_{model}_{attack}_mjp{ratio:g}_seed{seed}.png"


def pick_images(folder: Path, batch_size: int, seed: int) -> tuple[list[Path], list[int | None]]:
    """A seeded batch of image files found under ``folder`` (recursively), and each one's class:
    the index of its top-level sub-folder among the sorted sub-folders (ImageFolder layout), None
    for files directly in ``folder``."""
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if len(files) < batch_size:
        raise InputError(f"--images: {folder} holds {len(files)} image files, fewer than --batch-size {batch_size}")
    classes = sorted({p.relative_to(folder).parts[0] for p in files if len(p.relative_to(folder).parts) > 1})
    chosen = random.Random(seed).sample(range(len(files)), batch_size)
    picked = [files[i] for i in sorted(chosen)]
    labels = [classes.index(p.relative_to(folder).parts[0]) if len(p.relative_to(folder).parts) > 1 else None
              for p in picked]
    return picked, labels


@contextmanager
def optimisation_progress(attack_name: str) -> Iterator[None]:
    """A progress bar on stderr while an optimisation attack runs (the bar goes when it ends)."""
    from ..attacks.gradient_matching import ON_PROGRESS

    with Progress(TextColumn(f"{attack_name}: optimising"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("steps, best distance {task.fields[best]}"), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("", total=None, best="-")

        def report(done: int, steps: int, best: float) -> None:
            bar.update(task, completed=done, total=steps, best=f"{best:.4g}")

        token = ON_PROGRESS.set(report)
        try:
            yield
        finally:
            ON_PROGRESS.reset(token)


# The rows the table prints, with what each means (--json gives every metric).
TABLE_ROWS = [
    ("psnr", "PSNR dB", "reconstruction vs image (matched one-to-one; 100 = exact)"),
    ("ssim", "SSIM", "structural similarity (1 = identical; 0.3 is about where an image becomes recognisable)"),
    ("patch_psnr", "patch PSNR dB", "each true patch vs its best-matching reconstructed patch: content that "
                                    "leaked in the wrong place"),
    ("psnr_shuffled", "PSNR dB, shuffled patches", "MJP: the patches the jigsaw moved"),
    ("psnr_unshuffled", "PSNR dB, other patches", "MJP: the patches left in place"),
    ("label_acc", "label accuracy", "share of the batch's labels the attack recovered"),
    ("patches_exact", "patches read", "share of the batch's patches read at >= 40 dB (planting attacks)"),
    ("patches_in_image", "patches in own image", "share of the patches read that sit in their own image"),
]


def _print_table(summary: dict[str, Any]) -> None:
    table = Table(title=f"{summary['attack']} on {summary['model']} (mjp ratio {summary['mjp_ratio']:g}, "
                        f"batch {summary['batch_size']})")
    for column in ("metric", "value", "meaning"):
        table.add_column(column, justify="right" if column == "value" else "left")

    def text(value: float | None) -> str:
        return "-" if value is None else f"{value:.4g}"

    metrics = summary["metrics"]
    for key, name, meaning in TABLE_ROWS:
        if key in metrics:
            table.add_row(name, text(metrics[key]), meaning)
    table.add_row("baseline PSNR dB", text(summary["baseline"]["psnr"]), "a mid-grey image: what knowing nothing scores")
    table.add_row("leakage dB", text(summary["leakage_db"]), "PSNR over the baseline: above 0, the reply leaked")
    table.add_row("attack seconds", f"{summary['seconds']:.3f}", "")
    out.print(table)
    out.print(f"{len(metrics)} metrics with --json. Truth (left) | reconstruction (right): {summary['image']}")


@app.command("attack")
@user_errors
def attack(
    model: Annotated[str, typer.Option("--model", help="timm model name, e.g. vit_tiny_patch4_32 or "
                                       "mjp_vit_small_patch16_224 (random init, seeded).", show_default=False)],
    image: Annotated[Optional[Path], typer.Option("--image", help="Image file to leak (resized and centre-cropped "
                                                  "to the model's input size).", show_default=False)] = None,
    images_dir: Annotated[Optional[Path], typer.Option("--images", help="Folder of images (searched recursively; "
                                                       "class = top-level sub-folder): attack a seeded batch of "
                                                       "--batch-size of them.", show_default=False)] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images in the client's batch (with --images).",
                                            min=1)] = 1,
    weights: Annotated[Optional[Path], typer.Option("--weights", help="Attack these weights instead of the random "
                                                    "init: a state dict (a run's final_weights.pt) or a checkpoint.",
                                                    show_default=False)] = None,
    attack_name: Annotated[str, typer.Option("--attack", metavar="|".join(attack_names()),
                                             help="Attack: april (closed form), ig, dlg, april-opt, adaptive; imprint "
                                             "or trap (a dishonest server: plants weights in the model it sends, "
                                             "then reads the patches off the reply).")] = "april",
    mjp_ratio: Annotated[Optional[float], typer.Option("--mjp-ratio", help="Share of patches the client shuffles "
                                                       "(mjp_ models; 0 = no shuffle; default: the model's).")] = None,
    mjp_mode: Annotated[str, typer.Option("--mjp-mode", metavar="mjp|naive", help="mjp (masked position "
                                          "embeddings) or naive (shuffle only).")] = "mjp",
    server_images_dir: Annotated[Optional[Path], typer.Option("--server-images", help="imprint: the server's own "
                                                              "images for its bins' thresholds, a folder (default: "
                                                              "the built-in public photos).",
                                                              show_default=False)] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seeds the model's init, the jigsaw draw and the attack.")] = 0,
    steps: Annotated[Optional[int], typer.Option("--steps", help="Optimisation budget of ig/dlg/april-opt/"
                                                 "adaptive (default: the attack's).", min=1)] = None,
    label: Annotated[int, typer.Option("--label", help="The image's class in the client's batch.", min=0)] = 0,
    out_dir: Annotated[Path, typer.Option("--out", help="Directory for the truth | reconstruction PNG "
                                           "(created owner-only).")] = Path("attack-out"),
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")] = False,
) -> None:
    """Compute one client's gradient on IMAGE (or a seeded batch from --images) and attack it; print the
    leakage metrics (batch means after matching reconstructions one-to-one to the images)."""
    import torch

    from ..attacks import NotApplicable, build_attack
    from ..attacks.imprint import server_images
    from ..audit.attack_case import build_client_model, comparison_grid, load_image, load_weights, make_private_dir
    from ..audit.attack_case import run_single, write_private_png

    if (image is None) == (images_dir is None):
        raise InputError("--image: give either --image FILE or --images DIR (with --batch-size)")
    if image is not None and not image.is_file():
        raise InputError(f"--image: no such file: {image}")
    if image is not None and batch_size != 1:
        raise InputError("--batch-size: a batch needs --images DIR")
    if images_dir is not None and not images_dir.is_dir():
        raise InputError(f"--images: no such folder: {images_dir}")
    if weights is not None and not weights.is_file():
        raise InputError(f"--weights: no such file: {weights}")
    if server_images_dir is not None and not server_images_dir.is_dir():
        raise InputError(f"--server-images: no such folder: {server_images_dir}")
    if mjp_mode not in ("mjp", "naive"):
        raise InputError(f"--mjp-mode: must be mjp or naive, got {mjp_mode!r}")
    options: dict[str, Any] = {"seed": seed} | ({"steps": steps} if steps is not None else {})
    try:
        client = build_client_model(model, mjp_ratio, mjp_mode, seed)
        attacker = build_attack(attack_name, **options)
        if weights is not None:
            load_weights(client, weights)
    except ValueError as exc:
        raise InputError(str(exc)) from None  # already names the field: "model: ...", "attack: ..."
    if label >= client.model.num_classes:
        raise InputError(f"--label: {model} has {client.model.num_classes} classes, got {label}")
    files, classes = pick_images(images_dir, batch_size, seed) if images_dir is not None else ([image], [None])
    labels = [label if c is None else c for c in classes]
    if max(labels) >= client.model.num_classes:
        raise InputError(f"--images: {images_dir} has more classes than {model}'s {client.model.num_classes}")
    try:
        truth = torch.cat([load_image(path, client.image_size) for path in files])
    except OSError:  # PIL's UnidentifiedImageError is an OSError
        raise InputError(f"--image: not a readable image: {image or images_dir}") from None
    try:
        own = None if server_images_dir is None else server_images(client.image_size, source="imagefolder",
                                                                   root=str(server_images_dir), seed=seed)
        with optimisation_progress(attack_name):
            result = run_single(client, truth, attacker, label=torch.tensor(labels), seed=seed, server_own=own)
    except NotApplicable as exc:
        raise InputError(str(exc)) from None

    ratio = float(getattr(client.model, "mjp_ratio", 0.0))
    make_private_dir(out_dir)
    png = out_dir / _output_name(image or images_dir, model, attack_name, ratio, seed, len(files))
    write_private_png(comparison_grid(truth, result.reconstruction.images), png)
    rec = result.reconstruction
    summary = {
        "model": model,
        "attack": attack_name,
        "mjp_ratio": ratio,
        "mjp_mode": mjp_mode if model.startswith("mjp_") else None,
        "seed": seed,
        "weights": None if weights is None else str(weights),
        "batch_size": len(files),
        "images": [str(p) for p in files],
        "labels": labels,
        "labels_recovered": None if rec.labels is None else rec.labels.tolist(),
        "shuffled_patches": int(result.shuffled.sum()),
        # Batch means over the images, each matched one-to-one to its reconstruction first.
        "metrics": {key: _finite(value) for key, value in result.metrics.items()},
        "baseline": {"psnr": _finite(result.baseline_psnr), "kind": "mid-grey"},
        "leakage_db": _finite(result.leakage_db),
        "seconds": result.seconds,
        "image": str(png),
        "threat_model": rec.threat_model.to_dict(),
        "info": {k: v for k, v in rec.info.items() if isinstance(v, (int, float, str, bool))},
    }
    if as_json:
        print(json.dumps(summary))
    else:
        _print_table(summary)
