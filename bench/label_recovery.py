"""Labels of a batch from the head's gradient, at init and trained: the data-free estimate the attacks use
against the model's own estimate on noise images.

The optimisation attacks recover a batch's labels (``fedmjp.attacks.labels``) with repeats: count_c = B (p_c -
dL/db_c), where p_c, the batch's mean softmax of class c, is unknown to the server. The attacks estimate it
data-free as the mean positive bias-gradient entry (which assumes a model that is not yet confident); the
other estimate is the global model's mean softmax on uniform-noise images (``dummy_mean_probabilities``),
which the server can compute. Per model, stage and batch size: the share of the batch's labels recovered
(multiset intersection) and the share of batches recovered exactly, over seeded random batches of CIFAR-10
test images (repeats as they come). "trained": 1 centralised epoch on 2,000 training images (AdamW 1e-3),
as in ``bench.batch_leakage``. Environment: FEDMJP_BENCH_BATCHES (default "4,16,32"), FEDMJP_BENCH_DRAWS
(batches per cell, default 20). Writes bench/results/label_recovery.md.
"""

from __future__ import annotations

import os

os.environ.setdefault("TIMM_FUSED_ATTN", "0")

import time  # noqa: E402

import torch  # noqa: E402

from fedmjp.attacks import Observation  # noqa: E402
from fedmjp.attacks.labels import dummy_mean_probabilities, recover_label_multiset  # noqa: E402
from fedmjp.federation.train import compute_gradient  # noqa: E402
from fedmjp.scoring.metrics import label_accuracy  # noqa: E402

from ._report import write_page  # noqa: E402
from .batch_leakage import DATA, _images, models_by_stage  # noqa: E402

BATCHES = [int(b) for b in os.environ.get("FEDMJP_BENCH_BATCHES", "4,16,32").split(",")]
DRAWS = int(os.environ.get("FEDMJP_BENCH_DRAWS", "20"))
TEST_IMAGES = 500


def _cell(model: torch.nn.Module, name: str, images: torch.Tensor, labels: torch.Tensor, batch: int
          ) -> dict[str, tuple[float, float]]:
    """estimate -> (mean share of labels recovered, share of batches exact) over DRAWS seeded batches."""
    estimates = {"data-free (the attacks')": None, "model on noise": dummy_mean_probabilities(model, 32)}
    scores: dict[str, list[tuple[float, bool]]] = {key: [] for key in estimates}
    for draw in range(DRAWS):
        pick = torch.randperm(len(labels), generator=torch.Generator().manual_seed(draw))[:batch]
        truth = labels[pick]
        grads = compute_gradient(model, images[pick], truth).tensors
        obs = Observation(name, {}, grads, num_examples=batch)
        for key, mean_probs in estimates.items():
            found = recover_label_multiset(obs, mean_probs)
            share = label_accuracy(truth.tolist(), found.tolist())
            scores[key].append((share, sorted(found.tolist()) == sorted(truth.tolist())))
    return {key: (sum(s for s, _ in got) / len(got), sum(e for _, e in got) / len(got)) for key, got in scores.items()}


def main() -> None:
    if not DATA.is_dir():
        print(f"skipping: {DATA} not found")
        return
    torch.set_num_threads(min(2, torch.get_num_threads()))
    started = time.perf_counter()
    images, labels = _images("test", TEST_IMAGES)  # class by class in turn
    lines = ["| model | stage | batch | estimate of p_c | labels recovered | batches exact |", "|---|---|---:|---|---:|---:|"]
    for label, _ratio, stage, client in models_by_stage():
        for batch in BATCHES:
            for key, (share, exact) in _cell(client.model, client.name, images, labels, batch).items():
                lines.append(f"| {label} | {stage} | {batch} | {key} | {share:.3f} | {exact:.2f} |")
                print(lines[-1], flush=True)
    load = os.getloadavg()
    note = (f"CIFAR-10 test images ({TEST_IMAGES}, {DRAWS} seeded random batches per row, repeats as drawn), 4-block "
            f"ViT-Ti/4 (32 px), the FedSGD gradient of each batch. {time.perf_counter() - started:.0f} s; load average "
            f"at the end {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on a 2-core machine.")
    write_page("label_recovery", "Labels of a batch from the head's gradient", note, lines)


if __name__ == "__main__":
    main()
