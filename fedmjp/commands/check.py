"""``fedmjp check``: a client operator checks a received model file before training on it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from .app import app, user_errors
from ..errors import InputError

if TYPE_CHECKING:
    from ..defences.model_check import Finding

REFUSED_EXIT = 3  # 0: accept; 2: bad input; 3: the check refuses the model


@app.command("check")
@user_errors
def check(
    model: Annotated[str, typer.Option("--model", help="timm model name the client builds, e.g. vit_tiny_patch4_32 "
                                       "or mjp_vit_tiny_patch4_32.", show_default=False)],
    weights: Annotated[Path, typer.Option("--weights", help="The received weights: a state dict or a checkpoint.",
                                          show_default=False)],
    accepted: Annotated[Optional[Path], typer.Option("--accepted", help="The weights this client last accepted "
                                                     "(adds the norm-jump test).", show_default=False)] = None,
    images_dir: Annotated[Optional[Path], typer.Option("--images", help="A folder of the client's own images "
                                                       "(searched recursively): adds the tests of what the "
                                                       "weights do to a seeded batch of them.",
                                                       show_default=False)] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images in that batch.", min=1)] = 8,
    mjp_ratio: Annotated[Optional[float], typer.Option("--mjp-ratio", help="Share of patches the client shuffles "
                                                       "(mjp_ models; default: the model's).")] = None,
    mjp_mode: Annotated[str, typer.Option("--mjp-mode", help="mjp (masked position embeddings) or naive (shuffle "
                                          "only).")] = "mjp",
    seed: Annotated[int, typer.Option("--seed", help="Seeds the choice of the batch.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")] = False,
) -> None:
    """Check received weights for planted structure, as a client's model check does before training; exit 0
    (accept) or 3 (refuse)."""
    import torch

    from ..audit.attack_case import build_client_model, load_image, load_weights
    from ..defences.model_check import check_model
    from .attack import pick_images

    for option, path in (("--weights", weights), ("--accepted", accepted)):
        if path is not None and not path.is_file():
            raise InputError(f"{option}: no such file: {path}")
    if images_dir is not None and not images_dir.is_dir():
        raise InputError(f"--images: no such folder: {images_dir}")
    if mjp_mode not in ("mjp", "naive"):
        raise InputError(f"--mjp-mode: must be mjp or naive, got {mjp_mode!r}")
    try:
        client = build_client_model(model, mjp_ratio, mjp_mode, seed)
        reference = None
        if accepted is not None:
            load_weights(client, accepted)
            reference = {k: v.clone() for k, v in client.model.state_dict().items()}
        load_weights(client, weights)
    except ValueError as exc:
        raise InputError(str(exc).replace("weights:", "--weights:", 1)) from None
    received = {k: v.clone() for k, v in client.model.state_dict().items()}
    images = None
    if images_dir is not None:
        files, _ = pick_images(images_dir, batch_size, seed)
        try:
            images = torch.cat([load_image(path, client.image_size) for path in files])
        except OSError:  # PIL's UnidentifiedImageError is an OSError
            raise InputError(f"--images: not a readable image in {images_dir}") from None
    findings = check_model(client.model, received, reference, images)
    tests = ["weights", *(["history"] if reference is not None else []), *(["batch"] if images is not None else [])]
    if as_json:
        print(json.dumps({"refused": bool(findings), "tests": tests, "findings": [f.to_dict() for f in findings]}))
    else:
        _print_findings(findings, tests)
    if findings:
        raise typer.Exit(REFUSED_EXIT)


def _print_findings(findings: list[Finding], tests: list[str]) -> None:
    console = Console()
    if not findings:
        console.print(f"accept: no test fired ({', '.join(tests)})")
        return
    table = Table(title=f"refuse: {len(findings)} finding(s) ({', '.join(tests)})")
    for column in ("test", "tensor", "value", "bound"):
        table.add_column(column, justify="right" if column in ("value", "bound") else "left")
    for finding in findings:
        table.add_row(finding.test, finding.tensor, f"{finding.value:.4g}", f"{finding.bound:g}")
    console.print(table)
