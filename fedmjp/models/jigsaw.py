"""Block-wise random jigsaw shuffle on the patch grid (MJP, CVPR 2023).

Patches are chosen as rectangular blocks (BEiT-style block masking) until exactly
``round(ratio * num_patches)`` are chosen, then permuted among themselves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Block:
    """A rectangle on the patch grid: rows [top, top + height), cols [left, left + width)."""

    top: int
    left: int
    height: int
    width: int


@dataclass
class Jigsaw:
    """One draw of the shuffle for a batch.

    ``mask[b, i]`` is True when position ``i`` of sample ``b`` is shuffled; ``perm[b, i]``
    is the patch index whose token lands at position ``i`` (identity on unshuffled
    positions). Leading dimension is 1 for a per-batch draw and broadcasts over the batch.
    """

    mask: torch.Tensor  # (1 or B, N) bool
    perm: torch.Tensor  # (1 or B, N) long

    def expand(self, batch_size: int) -> Jigsaw:
        return Jigsaw(self.mask.expand(batch_size, -1), self.perm.expand(batch_size, -1))

    def to(self, device: torch.device | str) -> Jigsaw:
        return Jigsaw(self.mask.to(device), self.perm.to(device))

    def apply(self, tokens: torch.Tensor) -> torch.Tensor:
        """Reorder patch tokens (B, N, D): position i receives token perm[i]."""
        perm = self.perm.expand(tokens.shape[0], -1).to(tokens.device)
        return tokens.gather(1, perm.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * torch.rand((), generator=generator).item()


def _randint(generator: torch.Generator, low: int, high: int) -> int:
    """Uniform integer in [low, high] inclusive."""
    return int(torch.randint(low, high + 1, (), generator=generator).item())


def _try_block(
    mask: torch.Tensor,
    budget: int,
    min_block: int,
    log_aspect: tuple[float, float],
    generator: torch.Generator,
    attempts: int = 10,
) -> Block | None:
    """BEiT's block step: a random rectangle that adds between 1 and ``budget`` new patches."""
    grid_h, grid_w = mask.shape
    for _ in range(attempts):
        area = _uniform(generator, min_block, max(min_block, budget))
        aspect = math.exp(_uniform(generator, *log_aspect))
        height = int(round(math.sqrt(area * aspect)))
        width = int(round(math.sqrt(area / aspect)))
        if not (1 <= height <= grid_h and 1 <= width <= grid_w):
            continue
        top = _randint(generator, 0, grid_h - height)
        left = _randint(generator, 0, grid_w - width)
        new = height * width - int(mask[top : top + height, left : left + width].sum())
        if 0 < new <= budget:
            mask[top : top + height, left : left + width] = True
            return Block(top, left, height, width)
    return None


def block_mask(
    grid_size: tuple[int, int],
    ratio: float,
    min_block: int = 4,
    aspect: tuple[float, float] = (0.3, 1 / 0.3),
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, list[Block]]:
    """Choose ``round(ratio * H * W)`` patches as a union of rectangles.

    Blocks of at least ``min_block`` patches are drawn as in BEiT; when no such block fits
    the remaining budget, smaller blocks (down to single patches) make up the exact count,
    so the chosen set never has more (or fewer) patches than requested.
    Returns the (H, W) bool mask and the blocks whose union it is.
    """
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"mjp ratio must be in [0, 1], got {ratio}")
    grid_h, grid_w = grid_size
    target = int(round(ratio * grid_h * grid_w))
    mask = torch.zeros(grid_h, grid_w, dtype=torch.bool)
    blocks: list[Block] = []
    log_aspect = (math.log(aspect[0]), math.log(aspect[1]))
    chosen = 0
    floor = min_block
    while chosen < target:
        block = _try_block(mask, target - chosen, min(floor, target - chosen), log_aspect, generator)
        if block is None:
            if floor == 1:
                # Single free patches always fit: take one at random.
                free = (~mask).flatten().nonzero().squeeze(1)
                idx = int(free[_randint(generator, 0, len(free) - 1)])
                mask.view(-1)[idx] = True
                block = Block(idx // grid_w, idx % grid_w, 1, 1)
            else:
                floor = max(1, floor // 2)
                continue
        blocks.append(block)
        chosen = int(mask.sum())
    return mask, blocks


def draw_jigsaw(
    grid_size: tuple[int, int],
    batch_size: int,
    ratio: float,
    min_block: int = 4,
    aspect: tuple[float, float] = (0.3, 1 / 0.3),
    per_sample: bool = False,
    generator: torch.Generator | None = None,
) -> Jigsaw:
    """Draw one mask and permutation per batch (the reference) or one per sample."""
    num_patches = grid_size[0] * grid_size[1]
    masks, perms = [], []
    for _ in range(batch_size if per_sample else 1):
        mask, _ = block_mask(grid_size, ratio, min_block, aspect, generator)
        flat = mask.flatten()
        chosen = flat.nonzero().squeeze(1)
        perm = torch.arange(num_patches)
        if len(chosen) > 0:
            shuffle = torch.randperm(len(chosen), generator=generator)
            perm[chosen] = chosen[shuffle]
        masks.append(flat)
        perms.append(perm)
    return Jigsaw(torch.stack(masks), torch.stack(perms))
