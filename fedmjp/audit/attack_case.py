"""One client, one batch, one attack: the path behind ``fedmjp attack`` and the attack benchmarks.

The client side (a model in a given MJP configuration computes the gradient of a labelled batch)
and the server side (an attack sees only the ``Observation``) are kept apart; the score is the
client's leakage receipt (reconstructions matched one-to-one to the batch, split by the client's
own jigsaw mask, which this local tool knows because it played the client).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch
from PIL import Image, ImageDraw
from torch import nn
from torchvision.transforms.functional import to_pil_image
from torchvision.utils import make_grid

from ..federation import checkpoint
from ..attacks.base import Attack, Observation, Reconstruction, Timer, plants
from ..attacks.imprint import server_images
from .receipt import receipt_scores
from .sent import sent_of
from ..scoring.batch_metrics import align_batch
from ..federation.train import compute_gradient, seed_jigsaw


@dataclass
class ClientModel:
    """The global model a client trains, with the arguments that rebuild its architecture."""

    name: str
    model: nn.Module
    kwargs: dict[str, Any]

    @property
    def image_size(self) -> int:
        return int(self.model.patch_embed.img_size[0])

    @property
    def patch_size(self) -> int:
        return int(self.model.patch_embed.patch_size[0])

    @property
    def num_patches(self) -> int:
        return int(self.model.patch_embed.num_patches)


@dataclass
class SingleResult:
    truth: torch.Tensor
    reconstruction: Reconstruction
    # Receipt metrics: means over the batch after one-to-one matching (plus ``start_psnr``).
    metrics: dict[str, float]
    # PSNR of the data-free mid-grey image, the same baseline for every attack: leakage is the gain over it.
    baseline_psnr: float
    # (1 or B, N) positions the client's jigsaw shuffled (all False when it did not shuffle).
    shuffled: torch.Tensor
    seconds: float

    @property
    def leakage_db(self) -> float:
        return self.metrics["psnr"] - self.baseline_psnr


def build_client_model(name: str, mjp_ratio: float | None = None, mjp_mode: str = "mjp", seed: int = 0,
                       **extra: Any) -> ClientModel:
    """A randomly initialised (seeded) model; MJP arguments only for MJP models.

    ``mjp_ratio`` None keeps the model's default; a ratio > 0 on a model without MJP is an error.
    """
    if not timm.is_model(name):
        raise ValueError(f"model: unknown model {name!r}")
    if mjp_ratio is not None and not 0.0 <= mjp_ratio <= 1.0:
        raise ValueError(f"mjp ratio: must be in [0, 1], got {mjp_ratio}")
    kwargs = dict(extra)
    if name.startswith("mjp_"):
        kwargs["mjp_mode"] = mjp_mode
        if mjp_ratio is not None:
            kwargs["mjp_ratio"] = mjp_ratio
    elif mjp_ratio:
        raise ValueError(f"mjp ratio: {name} has no jigsaw (use its mjp_ twin)")
    torch.manual_seed(seed)
    return ClientModel(name, timm.create_model(name, **kwargs), kwargs)


def load_image(path: str | Path, size: int) -> torch.Tensor:
    """(1, 3, size, size) in [0, 1]: shorter side resized to ``size`` (bicubic), then centre-cropped."""
    with Image.open(path) as img:
        img = img.convert("RGB")
        scale = size / min(img.size)
        width, height = max(size, round(img.width * scale)), max(size, round(img.height * scale))
        img = img.resize((width, height), Image.Resampling.BICUBIC)
        left, top = (width - size) // 2, (height - size) // 2
        img = img.crop((left, top, left + size, top + size))
        data = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
    return data.view(size, size, 3).permute(2, 0, 1).float().div(255).unsqueeze(0)


def load_weights(client: ClientModel, path: str | Path) -> None:
    """:func:`fedmjp.federation.checkpoint.load_weights` into the client's model (ValueError naming ``weights``)."""
    try:
        checkpoint.load_weights(client.model, path)
    except ValueError as exc:
        raise ValueError(f"weights: {exc} ({client.name} with these arguments)") from None


Defence = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]


def observe(client: ClientModel, images: torch.Tensor, labels: torch.Tensor, seed: int = 0,
            defend: Defence | None = None) -> tuple[Observation, torch.Tensor]:
    """The client's gradient on a batch (jigsaw seeded), as the server sees it after the client's
    ``defend`` (e.g. pruning), and the shuffled mask."""
    seed_jigsaw(client.model, seed)
    # The weights the server sent: copied before the client touches anything.
    weights = {k: v.detach().clone() for k, v in client.model.state_dict().items()}
    result = compute_gradient(client.model, images, labels)
    jigsaw = result.jigsaws[0]
    shuffled = jigsaw.mask.cpu() if jigsaw is not None else torch.zeros(1, client.num_patches, dtype=torch.bool)
    tensors = defend(result.tensors) if defend is not None else result.tensors
    obs = Observation(client.name, weights, tensors, num_examples=len(labels), model_kwargs=client.kwargs)
    return obs, shuffled


def run_single(client: ClientModel, images: torch.Tensor, attack: Attack, label: int | torch.Tensor = 0,
               seed: int = 0, server_own: torch.Tensor | None = None, defend: Defence | None = None) -> SingleResult:
    """Client gradient -> attack -> receipt. ``images`` (B, 3, H, W) with one label each (an int: all
    the same). The attack's time excludes the client's work.

    A planting attack (a dishonest server) first replaces the client's weights with the ones it plants
    from its own images ``server_own`` (default: 256 of the built-in public photos, never the client's).
    """
    labels = torch.as_tensor(label).long().expand(len(images)).clone() if torch.as_tensor(label).ndim == 0 \
        else torch.as_tensor(label).long()
    if plants(attack):
        own = server_own if server_own is not None else server_images(client.image_size, seed=seed)
        client.model.load_state_dict(attack.plant(client.name, client.model.state_dict(), own, client.kwargs))
    obs, shuffled = observe(client, images, labels, seed, defend)
    with Timer() as timer:
        recon = attack(obs)
    metrics, baseline = receipt_scores(images, labels, shuffled, client.patch_size, [sent_of(recon)])[0]
    return SingleResult(images, recon, metrics, baseline["psnr"], shuffled, timer.seconds)


def comparison_grid(truth: torch.Tensor, reconstruction: torch.Tensor, min_height: int = 128) -> Image.Image:
    """Truth | reconstruction side by side, one row per image (reconstructions matched to the batch),
    upscaled (nearest) so small images stay visible."""
    if len(truth) > 1:
        reconstruction = align_batch(reconstruction, truth)
    gap = max(2, truth.shape[-1] // 32)
    pairs = torch.stack([truth, reconstruction.clamp(0, 1)], dim=1).flatten(0, 1)  # t0, r0, t1, r1, ...
    # make_grid pads the border too; white belongs only between the pictures.
    grid = make_grid(pairs, nrow=2, padding=gap, pad_value=1.0)[:, gap:-gap, gap:-gap]
    factor = max(1, -(-min_height // grid.shape[-2]))
    grid = grid.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)
    return _labelled(to_pil_image(grid.mul(255).round().to(torch.uint8)), ["truth", "reconstruction"])


def _labelled(image: Image.Image, columns: list[str], height: int = 16) -> Image.Image:
    """``image`` under a white strip naming its equal-width columns (PIL's built-in font)."""
    framed = Image.new("RGB", (image.width, image.height + height), "white")
    framed.paste(image, (0, height))
    draw = ImageDraw.Draw(framed)
    width = image.width / len(columns)
    for i, name in enumerate(columns):
        left, top, right, bottom = draw.textbbox((0, 0), name)
        draw.text((i * width + (width - (right - left)) / 2, (height - (bottom - top)) / 2 - top), name, fill="black")
    return framed


def make_private_dir(path: Path) -> None:
    """Create ``path`` owner-only (0700); an existing directory is the user's and is left as it is."""
    if not path.exists():
        path.mkdir(parents=True, mode=0o700)
        path.chmod(0o700)  # mkdir's mode is filtered by the umask


def write_private_png(image: Image.Image, path: Path) -> None:
    """Write a PNG owner-only (0600), atomically: a temp file in the same directory, then rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # mkstemp: 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            image.save(handle, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
