"""Optimisation attacks: time per iteration over the floor (one forward + backward + double backward).

Two floors, measured in the same run on the same model: one forward + backward + double backward
of one image (an iteration of R restarts does R of them, so ``per restart`` divides by R times
it), and the same pass over the stacked batch of all R restarts at once (``stacked``: what an
iteration would cost if per-restart gradients came for free, which they do not: each restart
needs its own parameter gradient). Each attack runs with 1 restart (the plain path) and with 2
restarts, simulated one after the other (``loop``) or vectorised (``vmap``, the default).
Timings take the minimum over interleaved repeats, which is robust to other work on shared cores.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import timm
import torch
import torch.nn.functional as F

import fedmjp.models  # noqa: F401  (registers the models)
from fedmjp.attacks.base import Observation, rebuild_model
from fedmjp.attacks import build_attack
from fedmjp.attacks.gradient_matching import MatchingProblem, optimise, plain_forward, weights_of
from fedmjp.attacks.optimization import matched_names
from fedmjp.attacks.replay import simulator
from fedmjp.models import to_model_input
from fedmjp.federation.train import compute_gradient

RESULTS = Path(__file__).parent / "results" / "attack_speed.md"
CASES = [("vit_tiny_patch4_32", {}), ("vit_tiny_patch16_224", {"depth": 2})]
ATTACKS = ("ig", "dlg", "april-opt")
# (restarts, batching) settings measured for every attack.
SETTINGS = [(1, "vmap"), (2, "loop"), (2, "vmap")]
STEPS, REPEATS = 3, 3


def _observation(name: str, kwargs: dict) -> Observation:
    torch.manual_seed(0)
    model = timm.create_model(name, **kwargs)
    size = model.patch_embed.img_size
    result = compute_gradient(model, torch.rand(1, 3, *size), torch.tensor([1]))
    return Observation(name, model.state_dict(), result.tensors, model_kwargs=kwargs)


def _floor(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> Callable[[], None]:
    params = [p for p in model.parameters() if p.requires_grad]
    probes = [torch.randn_like(p) for p in params]

    def run() -> None:
        x = images.flatten(0, 1).requires_grad_(True)
        loss = F.cross_entropy(model(to_model_input(model, x)), labels.repeat(images.shape[0]))
        grads = torch.autograd.grad(loss, params, create_graph=True)
        torch.autograd.grad(sum((g * p).sum() for g, p in zip(grads, probes)), x)

    return run


def _attack(obs: Observation, model: torch.nn.Module, attack: str, start: torch.Tensor, labels: torch.Tensor,
            batching: str):
    # The attack's own distance, terms and optimiser; only the step count and restarts are the bench's.
    inversion = build_attack(attack, steps=STEPS, restarts=len(start), log_every=10**9)
    names = matched_names(model, obs)
    target = {n: obs.tensors[n] for n in names}
    problem = MatchingProblem(
        simulator(plain_forward(model), weights_of(model, names), labels, None), target, inversion.distance,
        terms=inversion.terms(model, target), batching=batching,
    )
    return lambda: optimise(problem, start, inversion.budget)


def _elapsed(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def measure(name: str, kwargs: dict) -> list[tuple[str, str, int, str, float, float, float]]:
    obs = _observation(name, kwargs)
    model = rebuild_model(obs)
    labels = torch.tensor([1])
    size = model.patch_embed.img_size
    starts = {r: torch.rand(r, 1, 3, *size, generator=torch.Generator().manual_seed(0)) for r, _ in SETTINGS}
    floors = {r: _floor(model, start, labels) for r, start in starts.items()}
    runs = {(a, r, b): _attack(obs, model, a, starts[r], labels, b) for a in ATTACKS for r, b in SETTINGS}
    [floor() for floor in floors.values()], [run() for run in runs.values()]  # warm-up
    best = {key: float("inf") for key in [*floors, *runs]}
    for _ in range(REPEATS):  # interleaved, so background load hits every entry alike
        for r, floor in floors.items():
            best[r] = min(best[r], _elapsed(floor))
        for key, run in runs.items():
            # STEPS iterations plus the final scoring pass (about a third of an iteration).
            best[key] = min(best[key], _elapsed(run) / (STEPS + 1 / 3))
    label = name + (f" depth={kwargs['depth']}" if "depth" in kwargs else "")
    return [(label, a, r, b, best[1], best[r], best[(a, r, b)], best[(a, r, b)] / (r * best[1]),
             best[(a, r, b)] / best[r]) for a, r, b in runs]


APRIL_CASE = ("vit_small_patch16_224", {})
APRIL_CALLS = 20


def april_speed() -> str:
    """April on ViT-S/16 at 224 px: time per image as built (layout cached, gelsy) against the former path
    (the meta-device layout rebuilt on every call, the SVD-based gelsd), and both PSNRs."""
    from fedmjp.attacks.april import _cached_layout, patches_to_image, solve_patches
    from fedmjp.attacks.base import patch_rows
    from fedmjp.attacks.labels import recover_labels
    from fedmjp.scoring.metrics import psnr
    from fedmjp.models import from_model_input

    name, kwargs = APRIL_CASE
    torch.manual_seed(0)
    model = timm.create_model(name, **kwargs)
    image = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    result = compute_gradient(model, image, torch.tensor([1]))
    obs = Observation(name, {}, result.tensors, model_kwargs=kwargs)
    attack = build_attack("april")

    def former() -> torch.Tensor:
        # As before this change: the layout built per call and the SVD-based solve; the rest as april's.
        layout = _cached_layout.__wrapped__(name, "{}")
        patches, _ = solve_patches(patch_rows(layout, obs.tensors["pos_embed"]), obs.tensors["patch_embed.proj.weight"],
                                   driver="gelsd")
        grid, patch = tuple(layout.patch_embed.grid_size), layout.patch_embed.patch_size[0]
        recover_labels(obs)
        return from_model_input(layout, patches_to_image(patches, grid, patch).float()).clamp(0, 1)

    timings: dict[str, list[float]] = {"april (cached layout, gelsy)": [], "former (layout per call, gelsd)": []}
    attack(obs)  # builds the cached layout once, as the first call of a run does
    for _ in range(APRIL_CALLS):  # interleaved, so background load hits both alike
        timings["april (cached layout, gelsy)"].append(_elapsed(lambda: attack(obs)))
        timings["former (layout per call, gelsd)"].append(_elapsed(former))
    rows, dw = patch_rows(model, obs.tensors["pos_embed"]), obs.tensors["patch_embed.proj.weight"]
    solve = {d: min(_elapsed(lambda d=d: solve_patches(rows, dw, driver=d)) for _ in range(5))
             for d in ("gelsd", "gelsy")}
    psnrs = {"gelsy": psnr(attack(obs).images, image).item(), "gelsd": psnr(former(), image).item()}
    load = os.getloadavg()
    lines = [f"## april on {name} at 224 px (one image, random init)\n",
             f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (machine shared with other work); "
             f"{torch.get_num_threads()} torch threads; {APRIL_CALLS} interleaved calls each.\n",
             "| path | median ms / image | min ms / image |", "|---|---|---|"]
    for label, values in timings.items():
        values = sorted(values)
        lines.append(f"| {label} | {1000 * values[len(values) // 2]:.1f} | {1000 * values[0]:.1f} |")
    lines += ["", f"solve alone (min of 5): gelsd {1000 * solve['gelsd']:.1f} ms, "
              f"gelsy {1000 * solve['gelsy']:.1f} ms; "
              f"PSNR with gelsy {psnrs['gelsy']:.2f} dB, with gelsd {psnrs['gelsd']:.2f} dB (100 = the cap: exact)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    torch.manual_seed(0)
    april = april_speed()
    print(april)
    rows = [row for name, kwargs in CASES for row in measure(name, kwargs)]
    header = ("| model | attack | restarts | batching | floor, 1 image (s) | floor, stacked (s) | per iteration (s) "
              "| ratio per restart | ratio to stacked |\n" + "|---" * 9 + "|\n")
    body = "".join(f"| {m} | {a} | {r} | {b} | {f1:.3f} | {fs:.3f} | {t:.3f} | {q1:.2f} | {qs:.2f} |\n"
                   for m, a, r, b, f1, fs, t, q1, qs in rows)
    text = (
        f"# Optimisation attacks: time per iteration over the floor\n\n"
        f"Floor: one forward + backward + double backward of the same model on one image (ratio per restart: "
        f"iteration / (restarts x that floor)) or on the stacked batch of all restarts (ratio to stacked). "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}.\n\n"
        + header + body + "\n" + april
    )
    print(text)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)


if __name__ == "__main__":
    os.environ.setdefault("TIMM_FUSED_ATTN", "0")
    main()
