"""Attack x model x metric table on real images: how much each attack leaks, with and without MJP.

ImageNet samples (224 px) on the ViT-S/16 family and CIFAR-10 test images (32 px) on the ViT-Ti/4
family, each model randomly initialised (seeded): the closed form needs no training, and the
tests show it stays exact after training. Every image is one client with batch size 1 and its
own jigsaw draw. Prints a table and writes it as markdown to bench/results/attacks_table.md.

Environment: FEDMJP_BENCH_ALL=1 uses all 32 ImageNet samples and 100 CIFAR images (default 8 and
16); FEDMJP_BENCH_OPT_IMAGES sets how many images per setting the optimisation attacks (ig, dlg,
april-opt) get (default 2, 32-px family only: a double backward through a 224-px ViT-S is minutes
per image on a CPU); FEDMJP_BENCH_OPT_STEPS their steps (default 200, one restart). The MJP-aware
``adaptive`` attacker runs on every image of the MJP models (it does not apply to a plain ViT).
About 20 minutes on 2 cores with the defaults.
"""

from __future__ import annotations

import importlib
import os
import sys

os.environ.setdefault("TIMM_FUSED_ATTN", "0")

from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from fedmjp.attacks import NotApplicable, attack_names, build_attack  # noqa: E402
from fedmjp.audit.attack_case import build_client_model, load_image, run_single  # noqa: E402
from fedmjp.results.budgets import budget_of, budget_words  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
RESULTS = Path(__file__).resolve().parent / "results" / "attacks_table.md"
ALL = os.environ.get("FEDMJP_BENCH_ALL") == "1"
OPT_IMAGES = int(os.environ.get("FEDMJP_BENCH_OPT_IMAGES", "2"))
OPT_STEPS = int(os.environ.get("FEDMJP_BENCH_OPT_STEPS", "200"))
OPTIMISATION = ("ig", "dlg", "april-opt")
# (label, mjp mode, ratio): None ratio = the plain timm ViT.
SETTINGS = [("ViT", None, None), ("naive shuffle 0.25", "naive", 0.25)] + [
    (f"MJP {r:g}", "mjp", r) for r in (0.05, 0.1, 0.25, 0.5)
]
COLUMNS = ("psnr", "leakage", "ssim", "patch_psnr", "psnr_shuffled", "psnr_unshuffled", "patch_psnr_shuffled")

# Wide enough for the table when the output is a file or a pipe (rich assumes 80 columns there).
console = Console(width=None if sys.stdout.isatty() else 200)


@dataclass
class DataSet:
    name: str
    plain_model: str
    mjp_model: str
    images: list[tuple[Path, int]]  # (file, label)


def imagenet(count: int) -> list[tuple[Path, int]]:
    files = sorted((DATA / "imagenet-samples").glob("*.JPEG"))
    return [(path, i) for i, path in enumerate(files[:count])]


def cifar(count: int) -> list[tuple[Path, int]]:
    """Round robin over the classes, so a small sample covers all ten."""
    root = DATA / "cifar10-subset" / "test"
    classes = sorted(p for p in root.iterdir() if p.is_dir())
    per_class = [sorted(c.glob("*.jpg")) for c in classes]
    return [(per_class[i % len(classes)][i // len(classes)], i % len(classes)) for i in range(count)]


def data_sets() -> list[DataSet]:
    found = []
    if (DATA / "imagenet-samples").is_dir():
        found.append(DataSet("ImageNet 224", "vit_small_patch16_224", "mjp_vit_small_patch16_224",
                             imagenet(32 if ALL else 8)))
    else:
        console.print(f"skipping ImageNet: {DATA / 'imagenet-samples'} not found")
    if (DATA / "cifar10-subset" / "test").is_dir():
        found.append(DataSet("CIFAR-10 32", "vit_tiny_patch4_32", "mjp_vit_tiny_patch4_32", cifar(100 if ALL else 16)))
    else:
        console.print(f"skipping CIFAR-10: {DATA / 'cifar10-subset' / 'test'} not found")
    return found


def attacks() -> list[tuple[str, dict]]:
    """april and adaptive, then the optimisation attacks with the bench's budget."""
    importlib.import_module("fedmjp.attacks.optimization")  # registers ig, dlg, april-opt
    budget = {"steps": OPT_STEPS, "restarts": 1, "seed": 0}
    return [("april", {}), ("adaptive", {}), *((name, budget) for name in OPTIMISATION if name in attack_names())]


def run_setting(data: DataSet, attack: str, options: dict, mode: str | None, ratio: float | None) -> dict | None:
    """Mean and std of every metric over the data set's images for one (attack, model) setting
    (None when the attack does not apply to the model)."""
    name = data.plain_model if mode is None else data.mjp_model
    client = build_client_model(name, ratio, mode or "mjp", seed=0)
    images = data.images[:OPT_IMAGES] if attack in OPTIMISATION else data.images
    rows, seconds = [], []
    for index, (path, label) in enumerate(images):
        try:
            result = run_single(client, load_image(path, client.image_size), build_attack(attack, **options),
                                label=label % client.model.num_classes, seed=index)
        except NotApplicable:
            return None
        rows.append({**result.metrics, "leakage": result.leakage_db})
        seconds.append(result.seconds)
    summary = {key: _mean_std([r[key] for r in rows if key in r]) for key in COLUMNS}
    summary["seconds"] = _mean_std(seconds)
    summary["n"] = len(rows)
    return summary


def _mean_std(values: list[float]) -> tuple[float, float] | None:
    return (float(np.mean(values)), float(np.std(values))) if values else None


def _cell(value: tuple[float, float] | None) -> str:
    return "-" if value is None else f"{value[0]:.1f} ± {value[1]:.1f}"


def _ssim_cell(value: tuple[float, float] | None) -> str:
    return "-" if value is None else f"{value[0]:.3f} ± {value[1]:.3f}"


def budget_reading(attack: str, options: dict) -> str:
    """A row's attack budget: closed form, or the budget with what it supports (this table does not check
    its optimisation attacks at 4x: their figures are lower bounds)."""
    budget = budget_of({"name": attack, "options": options})
    return f"{budget_words(budget)}: lower bound, not checked at 4x" if budget else "closed form"


def render(rows: list[tuple[str, str, str, dict, str]]) -> tuple[Table, str]:
    headers = ["data", "attack", "model", "n", "PSNR", "leakage dB", "SSIM", "patch PSNR", "PSNR shuffled",
               "PSNR unshuffled", "patch PSNR shuffled", "s / attack", "attack budget"]
    table = Table(title="Gradient leakage per attack and model (random-init models, batch size 1, dB)")
    for header in headers:
        table.add_column(header, justify="left" if header in ("data", "attack", "model") else "right")
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for data, attack, setting, s, budget in rows:
        seconds = "-" if s["seconds"] is None else f"{s['seconds'][0]:.2f}"
        cells = [data, attack, setting, str(s["n"]), _cell(s["psnr"]), _cell(s["leakage"]), _ssim_cell(s["ssim"]),
                 _cell(s["patch_psnr"]),
                 _cell(s["psnr_shuffled"]), _cell(s["psnr_unshuffled"]), _cell(s["patch_psnr_shuffled"]), seconds,
                 budget]
        table.add_row(*cells)
        lines.append("| " + " | ".join(cells) + " |")
    return table, "\n".join(lines)


def main() -> None:
    torch.set_num_threads(min(2, torch.get_num_threads()))
    console.print("models are randomly initialised (seed 0); every image is one client, batch size 1, "
                  "with its own jigsaw draw (seed = image index)")
    rows = []
    chosen = attacks()
    for data in data_sets():
        for attack, options in chosen:
            if attack in OPTIMISATION and data.name.startswith("ImageNet"):
                console.print(f"{attack} on {data.name}: skipped (32-px family only, see the module docstring)")
                continue
            for label, mode, ratio in SETTINGS:
                with console.status(f"{data.name}: {attack} on {label}"):
                    summary = run_setting(data, attack, options, mode, ratio)
                if summary is not None:
                    rows.append((data.name, attack, label, summary, budget_reading(attack, options)))
    if not rows:
        console.print("no data set found: nothing to report")
        return
    table, markdown = render(rows)
    console.print(table)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    note = (f"Random-init models, batch size 1, one jigsaw draw per image; mean ± std over images; leakage dB = "
            f"PSNR over the mid-grey image, the one data-free baseline of every attack. "
            f"ig, dlg, april-opt: {OPT_STEPS} steps, 1 restart, {OPT_IMAGES} image(s) per setting (32-px family). "
            f"adaptive: MJP models only "
            f"(it does not apply to a plain ViT).\n\n")
    RESULTS.write_text(f"# Attack leakage table\n\n{note}{markdown}\n")
    console.print(f"written: {RESULTS}")


if __name__ == "__main__":
    main()
