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

# (row step, col step, edge of the placed tile, facing edge of the neighbour) for the 4 neighbours.
_SIDES = [
    (0, -1, (..., slice(None), 0), (..., slice(None), -1)),
    (0, 1, (..., slice(None), -1), (..., slice(None), 0)),
    (-1, 0, (..., 0, slice(None)), (..., -1, slice(None))),
    (1, 0, (..., -1, slice(None)), (..., 0, slice(None))),
]


def edge_costs(tiles: Tensor, known: Tensor, candidates: Tensor, slots: Sequence[Slot],
               grid: tuple[int, int]) -> Tensor:
    """(K, S) cost of candidate k (of ``candidates`` (K, C, P, P)) in slot s: the summed squared difference
    of its edges with the facing edges of the slot's neighbours in ``tiles`` (B, N, C, P, P) that are
    ``known`` (B, N)."""
    grid_h, grid_w = grid
    cost = torch.zeros(len(candidates), len(slots))
    for s, (b, pos) in enumerate(slots):
        row, col = divmod(pos, grid_w)
        for d_row, d_col, own_edge, their_edge in _SIDES:
            r, c = row + d_row, col + d_col
            if 0 <= r < grid_h and 0 <= c < grid_w and known[b, r * grid_w + c]:
                diff = candidates[own_edge] - tiles[b, r * grid_w + c][their_edge]
                cost[:, s] += diff.pow(2).flatten(1).sum(1)
    return cost


def place_by_edges(tiles: Tensor, known: Tensor, candidates: Tensor, slots: Sequence[Slot],
                   grid: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The assignment of least total :func:`edge_costs`: (candidate indices, slot indices), as many as the
    fewer of the two."""
    return linear_sum_assignment(edge_costs(tiles, known, candidates, slots, grid).numpy())
