"""Images <-> patch tiles in the model's patch order (row-major over the grid), the one place that cuts them."""

from __future__ import annotations

from torch import Tensor


def to_tiles(images: Tensor, patch: int) -> Tensor:
    """(..., C, H, W) -> (..., N, C, P, P), N = (H/P)*(W/P) in row-major grid order."""
    *lead, c, h, w = images.shape
    t = images.reshape(*lead, c, h // patch, patch, w // patch, patch)
    t = t.movedim(-4, -5).movedim(-2, -4)  # (..., H/P, W/P, C, P, P)
    return t.reshape(*lead, (h // patch) * (w // patch), c, patch, patch)


def from_tiles(tiles: Tensor, grid: tuple[int, int]) -> Tensor:
    """Inverse of :func:`to_tiles`: (..., N, C, P, P) -> (..., C, H, W) for a (rows, cols) grid."""
    *lead, _, c, p, _ = tiles.shape
    t = tiles.reshape(-1, grid[0], grid[1], c, p, p).permute(0, 3, 1, 4, 2, 5)  # (L, C, H/P, P, W/P, P)
    return t.reshape(*lead, c, grid[0] * p, grid[1] * p)


def flat_tiles(images: Tensor, patch: int) -> Tensor:
    """(B, C, H, W) -> (B, N, C*P*P): each tile as the vector the patch embedding reads."""
    return to_tiles(images, patch).flatten(-3)
