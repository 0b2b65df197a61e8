"""Leakage against batch size: the strongest passive attack on B = 1, 4, 16, 64 real images, for a ViT and
MJP 0.25, at random init and after training.

CIFAR-10 test images (32 px) on a 4-block ViT-Ti/4 and its MJP twin (ratio 0.25). Each cell is one client
gradient (FedSGD) on a seeded batch; every applicable attack runs and the strongest (highest mean matched
PSNR, reconstructions matched one-to-one to the batch by the client's receipt) is reported with its SSIM,
its leakage over the mid-grey baseline and its seconds. Batch 1: april (closed form), adaptive (MJP),
ig; batches: ig and adaptive (MJP) with the same optimisation budget. "trained": the same model after
``FEDMJP_BENCH_TRAIN_EPOCHS`` (default 1) centralised epochs on 2,000 CIFAR-10 training images.
Environment: FEDMJP_BENCH_BATCHES (default "1,4,16,64"), FEDMJP_BENCH_OPT_STEPS (default 100, 1 restart).
Every optimisation attack of a cell runs again with 4x the budget (``fedmjp.results.convergence``): the row is
converged where its attack's PSNR moves < 1 dB and SSIM < 0.02 and no other attack of the cell is still rising
(it may overtake); a lower bound where one rises; not converged where it falls.
Writes bench/results/batch_leakage.md.
"""

from __future__ import annotations

import os

os.environ.setdefault("TIMM_FUSED_ATTN", "0")

import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from fedmjp.attacks import NotApplicable, build_attack  # noqa: E402
from fedmjp.audit.attack_case import ClientModel, build_client_model, load_image, run_single  # noqa: E402
from fedmjp.federation.train import train_epochs  # noqa: E402
from fedmjp.attacks.adaptive import REFINEMENT_ROUNDS  # noqa: E402
from fedmjp.results.budgets import budget_of, scaled_budget  # noqa: E402
from fedmjp.results.convergence import FACTOR, converged, strongest_reading  # noqa: E402

from ._report import write_page  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-subset"
BATCHES = [int(b) for b in os.environ.get("FEDMJP_BENCH_BATCHES", "1,4,16,64").split(",")]
STEPS = int(os.environ.get("FEDMJP_BENCH_OPT_STEPS", "100"))
CELL = "cell"  # one cell's checks at a time: the results' readings keyed by cell and arm
EPOCHS = int(os.environ.get("FEDMJP_BENCH_TRAIN_EPOCHS", "1"))
MODELS = [("ViT", "vit_tiny_patch4_32", None), ("MJP 0.25", "mjp_vit_tiny_patch4_32", 0.25)]


def _images(split: str, count: int, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Round robin over the classes of a split: (count, 3, 32, 32) and their labels."""
    classes = sorted(p for p in (DATA / split).iterdir() if p.is_dir())
    files = [sorted(c.glob("*.jpg")) for c in classes]
    picked = [(files[i % 10][offset + i // 10], i % 10) for i in range(count)]
    return torch.cat([load_image(p, 32) for p, _ in picked]), torch.tensor([label for _, label in picked])


def _attacks(batch: int, mjp: bool) -> list[tuple[str, dict]]:
    budget = {"steps": STEPS, "restarts": 1, "seed": 0}
    found = [("april", {})] if batch == 1 else []
    if mjp:  # one example: closed form with self-consistent refinement rounds; a batch: optimisation
        found.append(("adaptive", {"rounds": REFINEMENT_ROUNDS} if batch == 1 else budget))
    return found + [("ig", budget)]


def _check(client, images: torch.Tensor, labels: torch.Tensor, batch: int, best: tuple,
           ran: list[tuple[str, dict, float, float]]) -> str:
    """What the strongest attack's figure rests on (``ran``: the attacks that ran on the cell, with their
    options, PSNR and SSIM): every optimisation attack runs again with FACTOR times its budget (one that is still
    rising may overtake the strongest); the reading is the results' own
    (:func:`fedmjp.results.convergence.strongest_reading`)."""
    psnr, _, _, attack, _ = best
    checks = []
    for name, options, before, ssim in ran:
        spec = {"name": name, "options": options}
        if budget_of(spec, batch == 1):
            larger = scaled_budget(spec, FACTOR, batch == 1)["options"]
            result = run_single(client, images, build_attack(name, **larger), label=labels, seed=batch)
            checks.append({"cell": CELL, "arm": CELL, "attack": name, "psnr": before, "ssim": ssim,
                           "psnr_larger": result.metrics["psnr"], "ssim_larger": result.metrics["ssim"],
                           "converged": converged(result.metrics["psnr"] - before, result.metrics["ssim"] - ssim)})
    return strongest_reading(checks, CELL, CELL, attack, [c["attack"] for c in checks], psnr)


def _train(client, images: torch.Tensor, labels: torch.Tensor) -> None:
    loader = DataLoader(TensorDataset(images, labels), batch_size=64, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    train_epochs(client.model, loader, EPOCHS, lr=1e-3)


def models_by_stage() -> Iterator[tuple[str, float | None, str, ClientModel]]:
    """(label, MJP ratio, stage, client) for each of MODELS at init, then trained by ``_train`` on 2,000
    training images."""
    train = _images("train", 2000)
    for label, name, ratio in MODELS:
        client = build_client_model(name, ratio, seed=0, depth=4)
        for stage in ("init", "trained"):
            if stage == "trained":
                _train(client, *train)
            yield label, ratio, stage, client


def main() -> None:
    if not DATA.is_dir():
        print(f"skipping: {DATA} not found")
        return
    torch.set_num_threads(min(2, torch.get_num_threads()))
    rows = []
    for label, ratio, stage, client in models_by_stage():
        for batch in BATCHES:
            images, labels = _images("test", batch)
            best, ran = None, []
            for attack, options in _attacks(batch, ratio is not None):
                start = time.perf_counter()
                try:
                    result = run_single(client, images, build_attack(attack, **options), label=labels, seed=batch)
                except NotApplicable:
                    continue
                cell = (result.metrics["psnr"], result.metrics["ssim"], result.leakage_db, attack,
                        time.perf_counter() - start)
                ran.append((attack, options, result.metrics["psnr"], result.metrics["ssim"]))
                best = cell if best is None or cell[0] > best[0] else best
            rows.append((label, stage, batch, *best, _check(client, images, labels, batch, best, ran)))
            print(rows[-1], f"load {os.getloadavg()[0]:.1f}", flush=True)
    load = os.getloadavg()
    lines = ["| model | stage | batch | PSNR (matched mean) | SSIM | leakage dB over grey | strongest | s / attack "
             "| budget |", "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {m} | {s} | {b} | {p:.1f} | {q:.3f} | {g:.1f} | {a} | {t:.1f} | {c} |"
              for m, s, b, p, q, g, a, t, c in rows]
    note = (f"CIFAR-10 test images, 4-block ViT-Ti/4 (32 px), FedSGD gradient of one seeded batch; optimisation "
            f"budget {STEPS} steps, 1 restart (adaptive on one example: {REFINEMENT_ROUNDS} refinement rounds), "
            f"checked at {FACTOR}x; trained = {EPOCHS} epoch(s) on 2,000 training images (AdamW 1e-3). "
            f"Load average at the end {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on a shared 2-core machine.")
    write_page("batch_leakage", "Leakage against batch size", note, lines)


if __name__ == "__main__":
    main()
