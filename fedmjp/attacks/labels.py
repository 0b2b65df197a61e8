"""Label recovery from the classifier head's gradient (no optimisation, no images).

For cross-entropy with mean reduction over a batch of B examples, the head's gradients are

    dL/db_c   = (1/B) * sum_i (p_ic - y_ic)
    dL/dW_c,: = (1/B) * sum_i (p_ic - y_ic) h_i

with p_i the softmax output and h_i the features of example i. An absent class gets a positive
bias gradient (probabilities only), a present class gets -count/B plus its probabilities, which
is negative unless the model already puts more than count/B mass on it. So:

* **analytic recovery** (iDLG, Zhao et al. 2020, extended to distinct labels in a batch): the
  ``num_examples`` classes with the most negative bias gradient. Exact for one example and for
  batches of distinct labels while the model is not yet confident (random init, early training).
* **bias-corrected counts** for repeated labels: from the bias gradient above,
  count_c = B * (p_c - dL/db_c) exactly, with p_c the batch's mean softmax probability of class c,
  which the attacker does not have. Two estimates of p_c (in the spirit of LLG, Wainakh et al.,
  PETS 2022, which also corrects the gradient by the model's estimated "impact"):
  ``mean_probs`` given: the attacker's own estimate, e.g. :func:`dummy_mean_probabilities` (the
  global model's mean softmax on data-free noise images); not given: every class gets the mean of
  the positive bias-gradient entries (the absent classes' mean probability), which assumes the
  model is not confident (near initialisation). Counts are clamped at 0, normalised to sum to B
  and rounded by largest remainder.

Without a head bias, the weight gradient is used: it is the rank-B sum above, and its rows are
projected onto the leading right singular vector (for one example exactly (p - y) times |h|),
with the sign chosen so that most classes (the absent ones) score positive.

Updates: a one-step SGD update is -lr * gradient, so the sign is flipped; for more local steps the
signs still mostly hold, and the scores are an approximation.
"""

from __future__ import annotations

import torch
from torch import nn

from ..models import to_model_input
from .base import Observation

HEAD_WEIGHT = "head.weight"
HEAD_BIAS = "head.bias"


def label_scores(obs: Observation) -> torch.Tensor:
    """(K,) float64 scores with the gradient's sign: negative means the class is in the batch.

    In gradient units for gradients and for updates with a known ``local_lr``.
    """
    # A one-step SGD update is -lr * gradient.
    scale = -1.0 / (obs.local_lr or 1.0) if obs.kind == "update" else 1.0
    if HEAD_BIAS in obs.tensors:
        return scale * obs.tensors[HEAD_BIAS].double()
    if HEAD_WEIGHT not in obs.tensors:
        raise KeyError(f"label recovery needs {HEAD_BIAS!r} or {HEAD_WEIGHT!r} in the observed tensors")
    return scale * _weight_scores(obs.tensors[HEAD_WEIGHT].double())


def _weight_scores(grad_weight: torch.Tensor) -> torch.Tensor:
    # Rows are combinations of the examples' features; their shared direction carries (p - y).
    _, _, vh = torch.linalg.svd(grad_weight, full_matrices=False)
    scores = grad_weight @ vh[0]
    # Absent classes (most of them) have positive coefficients p_ic > 0.
    return scores if (scores > 0).sum() >= (scores < 0).sum() else -scores


def recover_labels(obs: Observation) -> torch.Tensor:
    """The ``num_examples`` most negative classes, ascending by score (analytic, distinct labels)."""
    scores = label_scores(obs)
    count = min(obs.num_examples, scores.numel())
    return torch.argsort(scores)[:count].long()


@torch.no_grad()
def dummy_mean_probabilities(model: nn.Module, size: int, count: int = 64, seed: int = 0) -> torch.Tensor:
    """(K,) the model's mean softmax on ``count`` uniform-noise images: a data-free estimate of p_c."""
    noise = torch.rand(count, 3, size, size, generator=torch.Generator().manual_seed(seed))
    was_training = model.training
    model.eval()
    probs = model(to_model_input(model, noise)).softmax(-1).mean(0).double()
    model.train(was_training)
    return probs


def noise_estimate_applies(obs: Observation) -> bool:
    """Whether the scores are one batch's bias gradient in gradient units, which the model's estimate of p_c
    (:func:`dummy_mean_probabilities`) is compared with: a gradient, or a one-step SGD update of known lr
    (-lr times the gradient; an Adam step is not)."""
    one_step = obs.kind == "gradient" or (obs.local_lr is not None and obs.local_steps == 1
                                          and obs.local_optimizer in (None, "sgd"))
    return one_step and HEAD_BIAS in obs.tensors


def estimate_label_counts(obs: Observation, mean_probs: torch.Tensor | None = None) -> torch.Tensor:
    """(K,) estimated number of examples per class (bias-corrected, sums to ``num_examples``).

    ``mean_probs`` needs the scores in gradient units: for an update, ``obs.local_lr`` must be set.
    """
    scores = label_scores(obs)
    batch = obs.num_examples
    if mean_probs is None:
        positive = scores[scores > 0]
        # Mean probability of an absent class; if every class is present, the uniform guess.
        p_bar = positive.mean() if positive.numel() else scores.new_tensor(1.0 / scores.numel())
        raw = (p_bar - scores).clamp(min=0)
    elif obs.kind == "update" and obs.local_lr is None:
        raise ValueError("estimate_label_counts: mean_probs with an update needs obs.local_lr")
    else:
        raw = (mean_probs.double() - scores).clamp(min=0)
    if raw.sum() <= 0:
        return torch.zeros_like(scores, dtype=torch.long)
    share = raw / raw.sum() * batch
    counts = share.floor().long()
    # Largest remainder: hand the examples lost to flooring to the largest fractions.
    leftover = batch - int(counts.sum())
    counts[torch.argsort(share - counts, descending=True)[:leftover]] += 1
    return counts


def recover_label_multiset(obs: Observation, mean_probs: torch.Tensor | None = None) -> torch.Tensor:
    """``num_examples`` labels with repeats, from :func:`estimate_label_counts`, sorted."""
    counts = estimate_label_counts(obs, mean_probs)
    return torch.repeat_interleave(torch.arange(counts.numel()), counts)
