"""The adaptive attacker: knows MJP and uses what its gradient gives away.

For one example's gradient of an MJP ViT (loss = CE + DAL, jigsaw mask M, shared unknown
embedding u), with z_i = W_e x_{pi(i)} + b_e + pos_i and g_i = dCE/dz_i:

(a) ``dL/dpos_embed`` rows of shuffled positions are exactly zero, every other row is not:
    the mask is read off the gradient.
(b) The DAL loss depends only on pos_embed, the DAL head (both known to the server) and the
    visible set (now known), so its gradient is computed on the attacker's copy and subtracted:
    the visible rows become exactly g_i, the dal_head gradient becomes zero. A step the client
    did not shuffle (``apply_prob`` < 1, ratio 0) has no DAL term (its dal_head gradient is zero)
    and no zero rows: nothing is removed and the attack is APRIL's closed form exactly.
(c) dL/dW_e = sum_visible g_i x_i^T + sum_masked g_j x_{pi(j)}^T. The g_j of masked positions are
    unknown; only their sum g_u = dL/du is observed. Writing g_j = g_u / m + e_j, the system
    dL/dW_e = G_U^T X_U + g_u y^T (+ sum_j e_j x_j^T) is solved by least squares for the visible
    patches X_U and y (the mean masked patch). The sum_j e_j x_j^T residual cannot be separated
    from X_U in one solve: it leaves X_U + C X_S with C the regression of the masked rows on the
    visible rows. ``refine`` then iterates: the model's own dCE/dz_j on the current estimate stands
    in for the masked rows (shifted to sum to g_u), all patches are re-solved, and the round whose
    predicted visible rows best match the observed ones is kept. This recovers the masked
    patches' content too (in an arbitrary order).
(d) The masked content is optimised by gradient matching (IG-style, all parameters) through
    the MJP forward with the known mask and the unknown embedding. All masked positions share
    one embedding, so the loss (and every gradient) is invariant to the order of the masked
    patches: the gradient carries no information about where they belong. Their place is
    chosen from image statistics only: a linear assignment that minimises border differences
    with the known visible neighbours (``placement.place_by_edges``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models import Jigsaw, from_model_input
from ..models.patches import from_tiles, to_tiles
from .april import patches_to_image
from .base import PATCH_WEIGHT, POS_EMBED, NotApplicable, Observation, Reconstruction, ThreatModel, Timer, patch_rows
from .base import patch_offset, rebuild_model, register_attack
from .gradient_matching import Budget, CosineTerm, Forward, MatchingProblem, Tensors, gradient_simulator, optimise
from .gradient_matching import plain_forward, weights_of
from .optimization import attack_labels, matched_names, random_start
from .placement import place_by_edges
from .replay import observed_target

UNK = "unk_pos_embed"
DAL_PREFIX = "dal_head."
# Self-consistent refinement rounds of one example's patches, unless the options say otherwise.
REFINEMENT_ROUNDS = 100
# Gradient-matching steps on a batch's gradient (the rounds refine one example only), unless the options say otherwise.
BATCH_STEPS = 240


def check_applicable(model: nn.Module, obs: Observation) -> None:
    if getattr(model, "unk_pos_embed", None) is None or getattr(model, "dal_head", None) is None:
        raise NotApplicable(f"adaptive: {obs.model_name} is not an MJP model with masked position embeddings")
    one_sgd_step = obs.local_steps == 1 and obs.local_lr and obs.local_optimizer in (None, "sgd")
    if obs.kind == "update" and not one_sgd_step:
        raise NotApplicable("adaptive: an update is usable only as one SGD step with a known learning rate")
    missing = [n for n in (POS_EMBED, PATCH_WEIGHT, UNK) if n not in obs.tensors]
    if missing:
        raise NotApplicable(f"adaptive: missing observed tensors {missing}")


def shuffled_positions(model: nn.Module, grad_pos_embed: Tensor) -> Tensor:
    """(N,) bool: patch positions whose position-embedding gradient row is exactly zero."""
    rows = patch_rows(model, grad_pos_embed)
    return (rows == 0).all(dim=1)


def identity_jigsaw(mask: Tensor) -> Jigsaw:
    """The mask with the masked patches left in place (their order is unobservable anyway)."""
    return Jigsaw(mask.unsqueeze(0), torch.arange(mask.numel()).unsqueeze(0))


def dal_applied(grads: Tensors) -> bool:
    """Whether the client's loss had a DAL term: only DAL reaches the DAL head, so its gradient says."""
    return any(bool(t.ne(0).any()) for n, t in grads.items() if n.startswith(DAL_PREFIX))


def dal_gradient(model: nn.Module, mask: Tensor) -> Tensors:
    """Gradient of the DAL loss for this visible set, by parameter name (data-free)."""
    names = [POS_EMBED] + [n for n, _ in model.named_parameters() if n.startswith(DAL_PREFIX)]
    params = dict(model.named_parameters())
    # dal_loss reads the draw of the last forward; setting it directly avoids a forward pass.
    model.jigsaw = identity_jigsaw(mask)
    try:
        grads = torch.autograd.grad(model.dal_loss(), [params[n] for n in names])
    finally:
        model.jigsaw = None
    return dict(zip(names, grads))


def remove_dal(tensors: Tensors, dal: Tensors) -> Tensors:
    """The observed gradient minus the DAL term: the cross-entropy gradient alone."""
    return {name: t - dal[name] if name in dal else t for name, t in tensors.items()}


def solve_visible(model: nn.Module, ce_grads: Tensors, mask: Tensor) -> Tensor:
    """(N, p) normalised patches: least squares for the visible ones, the mean estimate elsewhere."""
    rows = patch_rows(model, ce_grads[POS_EMBED])
    design = torch.cat([rows[~mask], ce_grads[UNK].reshape(1, -1)])
    solution = _lstsq(design, ce_grads[PATCH_WEIGHT].double().flatten(1))
    patches = solution.new_empty(mask.numel(), solution.shape[1])
    patches[~mask] = solution[:-1]
    patches[mask] = solution[-1]  # g_u y^T: y estimates the mean masked patch
    return patches


def token_gradients(model: nn.Module, mask: Tensor, patches: Tensor, labels: Tensor) -> Tensor:
    """(N, D) dCE/dz per patch position for candidate normalised patches, through the masked forward."""
    grid, patch = tuple(model.patch_embed.grid_size), model.patch_embed.patch_size[0]
    probe = torch.zeros(1, mask.numel(), model.embed_dim, requires_grad=True)
    # z_i = patch_embed(x)_i + pos_i, so a probe added to the patch embedding reads dCE/dz_i.
    hook = model.patch_embed.register_forward_hook(lambda _m, _i, out: out + probe)
    try:
        with model.fixed_jigsaw(identity_jigsaw(mask)):
            loss = F.cross_entropy(model(patches_to_image(patches.float(), grid, patch)), labels)
    finally:
        hook.remove()
    return torch.autograd.grad(loss, probe)[0][0]


def refine(model: nn.Module, ce_grads: Tensors, mask: Tensor, patches: Tensor, labels: Tensor, rounds: int) -> Tensor:
    """Self-consistent APRIL: estimate the masked rows g_j from the current patches, re-solve all.

    The visible rows are observed exactly; the masked rows are the model's dCE/dz_j on the
    current estimate, shifted so that they sum to the observed g_u. Each round is one forward
    and backward. The masked patches must differ from each other at the start: identical
    patches get identical rows and stay identical (the caller adds noise).
    """
    rows = patch_rows(model, ce_grads[POS_EMBED]).double()
    g_u = ce_grads[UNK].reshape(-1).double()
    dw = ce_grads[PATCH_WEIGHT].double().flatten(1)
    count = int(mask.sum())
    best, best_error = patches, float("inf")
    for _ in range(rounds):
        predicted = token_gradients(model, mask, patches, labels).double()
        # The visible rows are observed: how well the estimate explains them picks the best round
        # (the iteration is not monotone).
        error = float((predicted[~mask] - rows[~mask]).norm())
        if error < best_error:
            best, best_error = patches, error
        design = rows.clone()
        design[mask] = predicted[mask] + (g_u - predicted[mask].sum(0)) / count
        # Damped: the plain fixed-point iteration oscillates.
        patches = 0.5 * patches + 0.5 * _lstsq(design, dw)
    return best


def _lstsq(design: Tensor, dw: Tensor) -> Tensor:
    # float64 SVD-based solve, as APRIL's: the design can be ill-conditioned.
    return torch.linalg.lstsq(design.double().T, dw, driver="gelsd").solution


def place(tiles: Tensor, mask: Tensor, grid: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Reassign the masked tiles to masked positions by edge continuity with the visible ones.

    Returns the placed tiles and (N,) ``positions``: the position each tile of the input
    (optimiser's) layout is placed at (identity on visible positions).
    """
    masked = mask.nonzero().squeeze(1)
    rows, cols = place_by_edges(tiles[None], ~mask[None], tiles[masked], [(0, pos) for pos in masked.tolist()], grid)
    positions = torch.arange(mask.numel())
    positions[masked[torch.from_numpy(rows)]] = masked[torch.from_numpy(cols)]
    placed = tiles.clone()
    placed[positions] = tiles
    return placed, positions


def masked_forward(model: nn.Module, mask: Tensor) -> Forward:
    """The client's MJP forward with the detected mask: masked positions get the unknown embedding."""
    plain = plain_forward(model)
    jigsaw = identity_jigsaw(mask)

    def forward(params: Tensors, images: Tensor) -> Tensor:
        with model.fixed_jigsaw(jigsaw):
            return plain(params, images)

    return forward


@dataclass
class Adaptive:
    """MJP-aware attacker: mask from zero rows, DAL removed, patches solved (and optionally refined,
    optimised), masked tiles placed.

    ``rounds`` of ``refine`` (0: the plain least-squares step only).
    """

    budget: Budget
    rounds: int = REFINEMENT_ROUNDS
    layer_weights: dict[str, float] = field(default_factory=dict)
    # The budget of a batch's gradient matching (B > 1).
    batch_budget: Budget = field(default_factory=lambda: Budget(steps=BATCH_STEPS, restarts=2, lr=0.1, tv=0.05))
    name: str = "adaptive"

    def __call__(self, obs: Observation) -> Reconstruction:
        with Timer() as timer:
            model = rebuild_model(obs)
            check_applicable(model, obs)
            labels, label_source = attack_labels(obs, model)
            grads = observed_target(obs, None)  # a one-step update becomes its gradient
            mask = shuffled_positions(model, grads[POS_EMBED])
            # An unshuffled step (apply_prob < 1, ratio 0) adds no DAL term: nothing to remove, and
            # with no zero rows the closed-form solve is APRIL's.
            applied = dal_applied(grads)
            dal = dal_gradient(model, mask) if applied else {}
            ce_grads = remove_dal(grads, dal)
            info: dict[str, Any] = {"shuffled": int(mask.sum()), "dal_applied": applied}
            if obs.num_examples == 1:
                images, start = self._closed_form(model, obs, ce_grads, mask, labels, info)
            else:
                images, start = self._batch(model, obs, ce_grads, mask, labels, info)
            positions = None
            if mask.any():
                grid, patch = tuple(model.patch_embed.grid_size), model.patch_embed.patch_size[0]
                images, positions = self._place(images, mask, grid, patch)
        # What the DAL removal left in the head's gradient: 0 when the removed term is the client's
        # (per-sample masks in a batch leave a residual: their visible sets are not observable).
        info["dal_head_residual"] = max((float(t.abs().max()) for n, t in ce_grads.items() if n.startswith(DAL_PREFIX)),
                                        default=0.0)
        return Reconstruction(
            images=images,
            threat_model=ThreatModel(architecture=obs.model_name, labels=label_source, assumes_mjp=True),
            seconds=timer.seconds,
            labels=labels,
            positions=positions,
            shuffled=mask,
            start=start,
            info=info,
        )

    def _closed_form(self, model: nn.Module, obs: Observation, ce_grads: Tensors, mask: Tensor, labels: Tensor,
                     info: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """One example: least squares (APRIL on the visible rows), refined, masked content optimised."""
        patches = solve_visible(model, ce_grads, mask)
        grid, patch = tuple(model.patch_embed.grid_size), model.patch_embed.patch_size[0]
        noise = random_start(self.budget.restarts, 1, tuple(model.patch_embed.img_size), self.budget.seed)
        if mask.any() and self.rounds:
            # Break the symmetry of the masked patches (all equal to the mean estimate) with the noise.
            patches[mask] += to_tiles(noise[0, 0] - 0.5, patch).flatten(1)[mask].double()
            patches = refine(model, ce_grads, mask, patches, labels, self.rounds)
        images = from_model_input(model, patches_to_image(patches, grid, patch).float()).clamp(0, 1)
        if mask.any():
            images = self._optimise_masked(model, obs, ce_grads, images, mask, labels, info)
        return images, noise[0]

    def _batch(self, model: nn.Module, obs: Observation, ce_grads: Tensors, mask: Tensor, labels: Tensor,
               info: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """A batch: no closed form; gradient matching through the client's own forward (the detected
        mask, the unknown embedding) against the cross-entropy gradient, with the centred
        position-embedding term of ``ig``."""
        names = [n for n in matched_names(model, obs) if not n.startswith(DAL_PREFIX)]
        simulate = gradient_simulator(masked_forward(model, mask), weights_of(model, names), labels)
        terms = [CosineTerm(POS_EMBED, 1.0, rows_from=patch_offset(model), centred=True)]
        problem = MatchingProblem(simulate, {n: ce_grads[n] for n in names}, "cosine", self.layer_weights, terms)
        start = random_start(self.batch_budget.restarts, len(labels), tuple(model.patch_embed.img_size),
                             self.batch_budget.seed)
        result = optimise(problem, start, self.batch_budget, patch=model.patch_embed.patch_size[0])
        info.update(loss=result.loss, history=result.history)
        return result.variable, result.start

    def _optimise_masked(
        self, model: nn.Module, obs: Observation, ce_grads: Tensors, images: Tensor, mask: Tensor, labels: Tensor,
        info: dict[str, Any],
    ) -> Tensor:
        """Gradient matching over the masked tiles only (visible tiles fixed), from the refined estimate."""
        if self.budget.steps == 0:
            return images
        grid, patch = tuple(model.patch_embed.grid_size), model.patch_embed.patch_size[0]
        known = to_tiles(images[0], patch)  # (N, 3, P, P)
        masked = mask.nonzero().squeeze(1)

        def to_images(content: Tensor) -> Tensor:  # (R, m, 3, P, P) -> (R, 1, 3, H, W)
            tiles = known.expand(content.shape[0], *known.shape).clone()
            tiles[:, masked] = content
            return from_tiles(tiles, grid).unsqueeze(1)

        names = [n for n in matched_names(model, obs) if not n.startswith(DAL_PREFIX)]
        simulate = gradient_simulator(masked_forward(model, mask), weights_of(model, names), labels)
        problem = MatchingProblem(simulate, {n: ce_grads[n] for n in names}, "cosine", self.layer_weights)
        # Restart 0 continues from the refined tiles; the others from perturbed copies.
        jitter = 0.1 * (to_tiles(random_start(self.budget.restarts, 1, images.shape[-2:], self.budget.seed + 1), patch) - 0.5)
        jitter[0] = 0
        start = (known[masked] + jitter[:, 0, masked]).clamp(0, 1)
        result = optimise(problem, start, self.budget, to_images, patch)
        info.update(loss=result.loss, history=result.history)
        return to_images(result.variable[None])[0]

    @staticmethod
    def _place(images: Tensor, mask: Tensor, grid: tuple[int, int], patch: int) -> tuple[Tensor, Tensor]:
        """Order each image's masked tiles by border smoothness (the gradient cannot tell their order)."""
        placed, positions = zip(*(place(to_tiles(image, patch), mask, grid) for image in images))
        return from_tiles(torch.stack(placed), grid), torch.stack(positions)


@register_attack("adaptive")
def build_adaptive(rounds: int = REFINEMENT_ROUNDS, layer_weights: dict[str, float] | None = None, **budget: Any) -> Adaptive:
    """The MJP-aware attacker. One example: ``rounds`` of self-consistent refinement, then the
    masked-content optimisation budget: steps (0 skips it), restarts, lr, tv, seed. A batch: gradient
    matching with ``ig``'s budget (steps 240, restarts 2, lr 0.1, tv 0.05), overridden by the same options."""
    defaults = dict(steps=0, restarts=1, lr=0.01, tv=0.05)
    batch_defaults = dict(steps=BATCH_STEPS, restarts=2, lr=0.1, tv=0.05)
    return Adaptive(Budget(**{**defaults, **budget}), rounds, layer_weights or {},
                    Budget(**{**batch_defaults, **budget}))
