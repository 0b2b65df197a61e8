"""``fedmjp attack``: invert one client gradient on one image and score the leak."""

from __future__ import annotations

import os

# Before any timm import: optimisation attacks differentiate through attention twice.
os.environ.setdefault("TIMM_FUSED_ATTN", "0")

import json  # noqa: E402
import math  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Annotated, Any, Optional  # noqa: E402

import typer  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from ..cli import app, user_errors  # noqa: E402
from ..errors import InputError  # noqa: E402

out = Console()


def _finite(value: float) -> float | None:
    """JSON has no NaN: a metric that could not be computed is null."""
    return value if math.isfinite(value) else None


def _output_name(image: Path, model: str, attack: str, ratio: float, seed: int) -> str:
    return f"{image.stem}_{model}_{attack}_mjp{ratio:g}_seed{seed}.png"


def _print_table(summary: dict[str, Any]) -> None:
    table = Table(title=f"{summary['attack']} on {summary['model']} (mjp ratio {summary['mjp_ratio']:g})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in summary["metrics"].items():
        table.add_row(key, "-" if value is None else f"{value:.4g}")
    table.add_row("baseline psnr (data-free start)", "-" if summary["baseline_psnr"] is None
                  else f"{summary['baseline_psnr']:.4g}")
    table.add_row("attack seconds", f"{summary['seconds']:.3f}")
    out.print(table)
    out.print(f"truth | reconstruction: {summary['image']}")


@app.command("attack")
@user_errors
def attack(
    model: Annotated[str, typer.Option("--model", help="timm model name, e.g. vit_tiny_patch4_32 or "
                                       "mjp_vit_small_patch16_224 (random init, seeded).", show_default=False)],
    image: Annotated[Path, typer.Option("--image", help="Image file to leak (resized and centre-cropped to the "
                                        "model's input size).", show_default=False)],
    attack_name: Annotated[str, typer.Option("--attack", help="Attack: april (closed form), ig, dlg, april-opt, "
                                             "adaptive.")] = "april",
    mjp_ratio: Annotated[Optional[float], typer.Option("--mjp-ratio", help="Share of patches the client shuffles "
                                                       "(mjp_ models; 0 = no shuffle; default: the model's).")] = None,
    mjp_mode: Annotated[str, typer.Option("--mjp-mode", help="mjp (masked position embeddings) or naive (shuffle "
                                          "only).")] = "mjp",
    seed: Annotated[int, typer.Option("--seed", help="Seeds the model's init, the jigsaw draw and the attack.")] = 0,
    steps: Annotated[Optional[int], typer.Option("--steps", help="Optimisation budget of ig/dlg/april-opt/"
                                                 "adaptive (default: the attack's).", min=1)] = None,
    label: Annotated[int, typer.Option("--label", help="The image's class in the client's batch.", min=0)] = 0,
    out_dir: Annotated[Path, typer.Option("--out", help="Directory for the truth | reconstruction PNG "
                                           "(created owner-only).")] = Path("attack-out"),
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")] = False,
) -> None:
    """Compute one client's gradient on IMAGE (batch size 1) and attack it; print the leakage metrics."""
    from ..attacks import NotApplicable, build_attack
    from ..attack_case import build_client_model, comparison_grid, load_image, make_private_dir, run_single
    from ..attack_case import write_private_png

    if not image.is_file():
        raise InputError(f"--image: no such file: {image}")
    if mjp_mode not in ("mjp", "naive"):
        raise InputError(f"--mjp-mode: must be mjp or naive, got {mjp_mode!r}")
    options: dict[str, Any] = {"seed": seed} | ({"steps": steps} if steps is not None else {})
    try:
        client = build_client_model(model, mjp_ratio, mjp_mode, seed)
        attacker = build_attack(attack_name, **options)
    except ValueError as exc:
        raise InputError(str(exc)) from None  # already names the field: "model: ...", "attack: ..."
    if label >= client.model.num_classes:
        raise InputError(f"--label: {model} has {client.model.num_classes} classes, got {label}")
    try:
        truth = load_image(image, client.image_size)
    except OSError:  # PIL's UnidentifiedImageError is an OSError
        raise InputError(f"--image: not a readable image: {image}") from None
    try:
        result = run_single(client, truth, attacker, label=label, seed=seed)
    except NotApplicable as exc:
        raise InputError(str(exc)) from None

    ratio = float(getattr(client.model, "mjp_ratio", 0.0))
    make_private_dir(out_dir)
    png = out_dir / _output_name(image, model, attack_name, ratio, seed)
    write_private_png(comparison_grid(truth, result.reconstruction.images), png)
    summary = {
        "model": model,
        "attack": attack_name,
        "mjp_ratio": ratio,
        "mjp_mode": mjp_mode if model.startswith("mjp_") else None,
        "seed": seed,
        "label": label,
        "labels_recovered": None if result.reconstruction.labels is None else result.reconstruction.labels.tolist(),
        "shuffled_patches": int(result.shuffled.sum()),
        "metrics": {key: _finite(value) for key, value in result.metrics.items()},
        "baseline_psnr": _finite(result.baseline_psnr),
        "seconds": result.seconds,
        "image": str(png),
        "threat_model": result.reconstruction.threat_model.to_dict(),
    }
    if as_json:
        print(json.dumps(summary))
    else:
        _print_table(summary)
