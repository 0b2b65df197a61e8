"""Placing recovered patches on the patch grid by edge continuity, when the gradient does not say where they go.

A candidate tile fits a slot (an image and a position on its grid) as well as its edges continue the facing
edges of the slot's known neighbours; candidates go to slots by the assignment of least total mismatch
(Hungarian, scipy's ``linear_sum_assignment``). The adaptive attacker orders an image's masked tiles this
way; the imprint attack assigns the patches read at one position to the images of the batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

# A slot: (image in the batch, position on its grid, row-major).
Slot = tuple[int, int]

# (row step, col step, edge of the placed tile, the row/column inside it, facing edge of the neighbour, the
# row/column inside that) for the 4 neighbours.
_SIDES = [
    (0, -1, (..., slice(None), 0), (..., slice(None), 1), (..., slice(None), -1), (..., slice(None), -2)),
    (0, 1, (..., slice(None), -1), (..., slice(None), -2), (..., slice(None), 0), (..., slice(None), 1)),
    (-1, 0, (..., 0, slice(None)), (..., 1, slice(None)), (..., -1, slice(None)), (..., -2, slice(None))),
    (1, 0, (..., -1, slice(None)), (..., -2, slice(None)), (..., 0, slice(None)), (..., 1, slice(None))),
]


def edge_costs(tiles: Tensor, known: Tensor, candidates: Tensor, slots: Sequence[Slot],
               grid: tuple[int, int], *, predicted: bool = False) -> Tensor:
    """(K, S) cost of candidate k (of ``candidates`` (K, C, P, P)) in slot s: the summed squared difference
    of its edges with the facing edges of the slot's neighbours in ``tiles`` (B, N, C, P, P) that are
    ``known`` (B, N). ``predicted``: each side's edge against the other's extrapolated one step across the
    border (its edge plus its last step), both ways, so smooth gradients continue instead of costing."""
    grid_h, grid_w = grid
    cost = torch.zeros(len(candidates), len(slots))
    for s, (b, pos) in enumerate(slots):
        row, col = divmod(pos, grid_w)
        for d_row, d_col, own_edge, own_inner, their_edge, their_inner in _SIDES:
            r, c = row + d_row, col + d_col
            if 0 <= r < grid_h and 0 <= c < grid_w and known[b, r * grid_w + c]:
                neighbour = tiles[b, r * grid_w + c]
                if predicted:
                    ahead = candidates[own_edge] - (2 * neighbour[their_edge] - neighbour[their_inner])
                    back = neighbour[their_edge] - (2 * candidates[own_edge] - candidates[own_inner])
                    cost[:, s] += ahead.pow(2).flatten(1).sum(1) + back.pow(2).flatten(1).sum(1)
                else:
                    diff = candidates[own_edge] - neighbour[their_edge]
                    cost[:, s] += diff.pow(2).flatten(1).sum(1)
    return cost


def place_by_edges(tiles: Tensor, known: Tensor, candidates: Tensor, slots: Sequence[Slot],
                   grid: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The assignment of least total :func:`edge_costs`: (candidate indices, slot indices), as many as the
    fewer of the two."""
    return linear_sum_assignment(edge_costs(tiles, known, candidates, slots, grid).numpy())


def place_greedily(tiles: Tensor, known: Tensor, candidates: Tensor, slots: Sequence[Slot],
                   grid: tuple[int, int]) -> list[tuple[int, int]]:
    """(candidate index, slot index) pairs, surest first: each step places the candidate and slot of least
    mismatch per known facing edge among slots with a known neighbour, then counts the placed tile as known for
    the next. A gap surrounded by gaps is judged once its neighbours are in, not by an empty cost."""
    tiles, known = tiles.clone(), known.clone()
    free_candidates, free_slots = list(range(len(candidates))), list(range(len(slots)))
    pairs = []
    while free_candidates and free_slots:
        open_slots = [slots[s] for s in free_slots]
        cost = edge_costs(tiles, known, candidates[free_candidates], open_slots, grid, predicted=True)
        edges = _known_edges(known, open_slots, grid)
        if not bool((edges > 0).any()):
            break
        per_edge = torch.where(edges > 0, cost / edges.clamp(min=1), torch.inf)
        flat = int(per_edge.argmin())
        k, s = divmod(flat, len(free_slots))
        candidate, slot = free_candidates.pop(k), free_slots.pop(s)
        tiles[slots[slot]], known[slots[slot]] = candidates[candidate], True
        pairs.append((candidate, slot))
    return pairs


def _known_edges(known: Tensor, slots: Sequence[Slot], grid: tuple[int, int]) -> Tensor:
    """(S,) how many of each slot's neighbours are known."""
    grid_h, grid_w = grid
    count = torch.zeros(len(slots))
    for s, (b, pos) in enumerate(slots):
        row, col = divmod(pos, grid_w)
        for d_row, d_col, *_ in _SIDES:
            r, c = row + d_row, col + d_col
            count[s] += 0 <= r < grid_h and 0 <= c < grid_w and bool(known[b, r * grid_w + c])
    return count
