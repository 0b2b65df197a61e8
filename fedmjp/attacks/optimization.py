"""Optimisation attacks: Inverting Gradients, DLG and APRIL's optimisation variant.

All three are one attack (``GradientInversion``) with different distances and optimisers:

* ``ig`` (Geiping et al. 2020): 1 - cosine similarity over all parameters + total variation,
  Adam on signed gradients with step decays at 3/8, 5/8, 7/8, box constraint to [0, 1]. On a ViT
  it adds by default a cosine term on the centred patch rows of dL/dpos_embed (``centred_pos``,
  see ``CosineTerm``): without it the published distance stalls near a flat image on ViTs
  (astronaut on a 2-block ViT-Ti/4: 9.6 dB at 80 steps, 9.4 dB at 1,200; with it 22 dB at 300);
  ``centred_pos=0`` is IG exactly as published.
* ``dlg`` (Zhu et al. 2019): squared L2 gradient distance, L-BFGS.
* ``april-opt`` (Lu et al. 2022): ``ig`` plus APRIL's cosine term on the whole position-embedding
  gradient.

Candidates live in the [0, 1] image space and go through the model's own normalisation. The
attacker's copy runs unshuffled (eval mode): against an MJP client it does not know the jigsaw
draw, and its forward has no DAL loss (see ``adaptive`` for the attacker that knows MJP).
FedAvg updates are replayed when the local hyper-parameters are known (see ``replay``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from .base import POS_EMBED, Observation, Reconstruction, ThreatModel, Timer, patch_offset, rebuild_model
from .base import register_attack
from .gradient_matching import Budget, CosineTerm, Distance, MatchingProblem, Optimised, optimise, plain_forward
from .gradient_matching import weights_of
from .labels import dummy_mean_probabilities, noise_estimate_applies, recover_label_multiset, recover_labels
from .replay import Replay, observed_target, simulator


def attack_labels(obs: Observation, model: nn.Module) -> tuple[Tensor, Literal["given", "recovered"]]:
    """The labels the attacker uses: given when the threat model grants them, else recovered.

    One example: the analytic (iDLG) label; more: bias-corrected counts, which allow repeats, with the batch's
    mean softmax estimated by the global ``model`` on noise images where that applies: on CIFAR-10 batches of
    16 and 32 it recovers more labels than the data-free estimate, at init and trained (``bench.label_recovery``).
    """
    if obs.labels is not None:
        return obs.labels.long(), "given"
    if obs.num_examples == 1:
        return recover_labels(obs).long(), "recovered"
    mean_probs = dummy_mean_probabilities(model, image_size(model)[0]) if noise_estimate_applies(obs) else None
    return recover_label_multiset(obs, mean_probs).long(), "recovered"


def settings_source(obs: Observation) -> Literal["reported", "configured", "none"]:
    """Where the attacker's local hyper-parameters came from (recorded in the threat model)."""
    if obs.local_lr is None and obs.local_steps is None:
        return "none"
    return "reported" if obs.local_reported else "configured"


def matched_names(model: nn.Module, obs: Observation) -> list[str]:
    """Observed tensors that are parameters of the attacker's copy, in the model's order."""
    return [name for name, p in model.named_parameters() if p.requires_grad and name in obs.tensors]


def random_start(restarts: int, batch: int, image_size: tuple[int, int], seed: int) -> Tensor:
    """(R, B, 3, H, W) uniform noise: the data-free starting point."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(restarts, batch, 3, *image_size, generator=generator)


def image_size(model: nn.Module) -> tuple[int, int]:
    return tuple(model.patch_embed.img_size)


@dataclass
class GradientInversion:
    """One optimisation attack: a distance, optional position-embedding terms, a budget.

    ``pos_weight``: APRIL's term on the whole dL/dpos_embed; ``centred_pos``: the term on its
    centred patch rows. Either applies only when the model has a learnable position embedding.
    """

    name: str
    distance: Distance
    budget: Budget
    pos_weight: float = 0.0
    centred_pos: float = 0.0
    layer_weights: dict[str, float] = field(default_factory=dict)

    def terms(self, model: nn.Module, target: dict[str, Tensor]) -> list[CosineTerm]:
        if POS_EMBED not in target:
            return []
        terms = [CosineTerm(POS_EMBED, self.pos_weight)] if self.pos_weight else []
        if self.centred_pos:
            terms.append(CosineTerm(POS_EMBED, self.centred_pos, rows_from=patch_offset(model), centred=True))
        return terms

    def __call__(self, obs: Observation) -> Reconstruction:
        with Timer() as timer:
            model = rebuild_model(obs)
            labels, label_source = attack_labels(obs, model)
            replay = Replay.from_observation(obs)
            names = matched_names(model, obs)
            target = {n: t for n, t in observed_target(obs, replay).items() if n in names}
            simulate = simulator(plain_forward(model), weights_of(model, names), labels, replay)
            terms = self.terms(model, target)
            problem = MatchingProblem(simulate, target, self.distance, self.layer_weights, terms)
            start = random_start(self.budget.restarts, len(labels), image_size(model), self.budget.seed)
            result = optimise(problem, start, self.budget, patch=model.patch_embed.patch_size[0])
        return Reconstruction(
            images=result.variable,
            threat_model=ThreatModel(
                architecture=obs.model_name,
                labels=label_source,
                local_hyperparameters=replay is not None,
                local_settings_source=settings_source(obs),
            ),
            seconds=timer.seconds,
            labels=labels,
            start=result.start,
            info=self._info(obs, result, replay, terms),
        )

    def _info(self, obs: Observation, result: Optimised, replay: Replay | None,
              terms: list[CosineTerm]) -> dict[str, Any]:
        info: dict[str, Any] = {
            "distance": self.distance,
            "terms": [asdict(term) for term in terms],
            "loss": result.loss,
            "restart_losses": result.losses,
            "history": result.history,
            "budget": asdict(self.budget),
        }
        if obs.kind == "update":
            info["update_treatment"] = "replay" if replay is not None else "one-gradient"
        return info


def _budget(defaults: dict[str, Any], options: dict[str, Any]) -> Budget:
    return Budget(**{**defaults, **options})


@register_attack("ig")
def build_ig(
    centred_pos: float = 1.0, layer_weights: dict[str, float] | None = None, **budget: Any
) -> GradientInversion:
    """Inverting Gradients (+ ``centred_pos`` * the centred position term; 0 = as published).

    Budget: steps, restarts, lr, tv, signed, seed (see ``Budget``).
    """
    defaults = dict(steps=240, restarts=2, lr=0.1, tv=0.05)
    return GradientInversion("ig", "cosine", _budget(defaults, budget), centred_pos=centred_pos,
                             layer_weights=layer_weights or {})


@register_attack("dlg")
def build_dlg(**budget: Any) -> GradientInversion:
    """Deep Leakage from Gradients: L2 distance, L-BFGS. Budget: steps, restarts, lr, tv, seed."""
    defaults = dict(steps=100, restarts=1, lr=1.0, tv=0.0, optimizer="lbfgs", signed=False)
    return GradientInversion("dlg", "l2", _budget(defaults, budget))


@register_attack("april-opt")
def build_april_opt(
    pos_weight: float = 1.0, centred_pos: float = 1.0, layer_weights: dict[str, float] | None = None,
    **budget: Any,
) -> GradientInversion:
    """APRIL's optimisation attack: ``ig`` + ``pos_weight`` * (1 - cos) on dL/dpos_embed."""
    defaults = dict(steps=240, restarts=2, lr=0.1, tv=0.05)
    return GradientInversion("april-opt", "cosine", _budget(defaults, budget), pos_weight=pos_weight,
                             centred_pos=centred_pos, layer_weights=layer_weights or {})
