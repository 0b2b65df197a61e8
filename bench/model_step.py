"""MJP training cost and accuracy: step time of each MJP model over its plain twin, and a
short centralised CIFAR-10 run (ViT vs naive shuffle vs MJP at ratio 0.1, same budget).

Set FEDMJP_BENCH_EPOCHS (default 2) and FEDMJP_BENCH_TRAIN_PER_CLASS (default 300) to
change the CIFAR budget.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import timm
import torch
from rich.console import Console
from rich.table import Table
from torch.utils.data import DataLoader

import fedmjp.models  # noqa: F401  (registers the models)
from fedmjp.data.loading import load_dataset
from fedmjp.federation.train import evaluate, loss_terms, seed_jigsaw, train_epochs

from ._report import write_markdown

CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-subset"
PAIRS = [
    ("vit_tiny_patch4_32", 32, 64),
    ("vit_small_patch4_32", 32, 32),
    ("vit_tiny_patch16_224", 224, 16),
    ("vit_small_patch16_224", 224, 8),
    ("deit_small_patch16_224", 224, 8),
    ("vit_base_patch16_224", 224, 4),
]
console = Console()


def step_seconds(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    start = time.perf_counter()
    terms = loss_terms(model, images, labels)
    opt.zero_grad(set_to_none=True)
    terms.total.backward()
    opt.step()
    return time.perf_counter() - start


def step_ratio(name: str, size: int, batch: int, reps: int = 7) -> tuple[float, float, float]:
    """Median seconds per training step of the plain and MJP (ratio 0.25) models, interleaved."""
    torch.manual_seed(0)
    plain = timm.create_model(name).train()
    mjp = timm.create_model(f"mjp_{name}", mjp_ratio=0.25).train()
    seed_jigsaw(mjp, 0)
    images, labels = torch.rand(batch, 3, size, size), torch.randint(0, 10, (batch,))
    for model in (plain, mjp):  # warm-up
        step_seconds(model, images, labels)
    times: dict[str, list[float]] = {"plain": [], "mjp": []}
    for _ in range(reps):
        times["plain"].append(step_seconds(plain, images, labels))
        times["mjp"].append(step_seconds(mjp, images, labels))
    p, m = statistics.median(times["plain"]), statistics.median(times["mjp"])
    return p, m, m / p


def set_fused_attention(model: torch.nn.Module, fused: bool) -> None:
    for module in model.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = fused


def fused_attention_ratio(name: str, size: int, batch: int, reps: int = 7) -> tuple[float, float, float]:
    """Median seconds per client training step with timm's fused attention off and on, interleaved
    (clients no longer run with TIMM_FUSED_ATTN=0; only the attacker's copy turns it off)."""
    torch.manual_seed(0)
    model = timm.create_model(f"mjp_{name}", mjp_ratio=0.25).train()
    seed_jigsaw(model, 0)
    images, labels = torch.rand(batch, 3, size, size), torch.randint(0, 10, (batch,))
    times: dict[bool, list[float]] = {False: [], True: []}
    for rep in range(reps + 1):
        for fused in (False, True):
            set_fused_attention(model, fused)
            seconds = step_seconds(model, images, labels)
            if rep:  # the first pass is warm-up
                times[fused].append(seconds)
    off, on = statistics.median(times[False]), statistics.median(times[True])
    return off, on, off / on


def centralised_cifar(epochs: int, per_class: int) -> list[tuple[str, float, float]]:
    train = load_dataset("imagefolder", "train", 32, root=str(CIFAR), limit_per_class=per_class)
    test = load_dataset("imagefolder", "test", 32, root=str(CIFAR))
    arms = {
        "vit": ("vit_tiny_patch4_32", {}),
        "naive shuffle 0.1": ("mjp_vit_tiny_patch4_32", {"mjp_ratio": 0.1, "mjp_mode": "naive"}),
        "mjp 0.1": ("mjp_vit_tiny_patch4_32", {"mjp_ratio": 0.1}),
    }
    rows = []
    for arm, (name, kwargs) in arms.items():
        torch.manual_seed(0)
        model = timm.create_model(name, depth=6, **kwargs)
        seed_jigsaw(model, 0)
        loader = DataLoader(train, batch_size=128, shuffle=True, generator=torch.Generator().manual_seed(0))
        start = time.perf_counter()
        train_epochs(model, loader, epochs, lr=1e-3)
        seconds = time.perf_counter() - start
        rows.append((arm, evaluate(model, DataLoader(test, batch_size=256))["accuracy"], seconds))
    return rows


def main() -> None:
    table = Table(title="training step: MJP (ratio 0.25) over its plain twin, CPU, median of 7")
    for column in ("model", "px", "batch", "plain s/step", "mjp s/step", "mjp / plain"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name, size, batch in PAIRS:
        plain, mjp, ratio = step_ratio(name, size, batch)
        table.add_row(name, str(size), str(batch), f"{plain:.3f}", f"{mjp:.3f}", f"{ratio:.3f}")
    console.print(table)
    fused = Table(title="client training step (MJP 0.25): timm attention unfused over fused, CPU, median of 7")
    for column in ("model", "px", "batch", "unfused s/step", "fused s/step", "unfused / fused"):
        fused.add_column(column, justify="left" if column == "model" else "right")
    for name, size, batch in PAIRS[:3]:
        off, on, ratio = fused_attention_ratio(name, size, batch)
        fused.add_row(name, str(size), str(batch), f"{off:.3f}", f"{on:.3f}", f"{ratio:.3f}")
    console.print(fused)
    tables = [table, fused]
    if CIFAR.is_dir():
        epochs = int(os.environ.get("FEDMJP_BENCH_EPOCHS", "2"))
        per_class = int(os.environ.get("FEDMJP_BENCH_TRAIN_PER_CLASS", "300"))
        acc = Table(title=f"centralised CIFAR-10 subset: ViT-Ti/4 (6 blocks), {epochs} epochs, "
                          f"{per_class} train images per class, 2,000 test images")
        for column in ("arm", "test top-1", "train seconds"):
            acc.add_column(column, justify="left" if column == "arm" else "right")
        for arm, top1, seconds in centralised_cifar(epochs, per_class):
            acc.add_row(arm, f"{top1:.3f}", f"{seconds:.0f}")
        console.print(acc)
        tables.append(acc)
    else:
        console.print(f"skipped the CIFAR run: {CIFAR} not found")
    write_markdown("model_step", tables)


if __name__ == "__main__":
    main()
