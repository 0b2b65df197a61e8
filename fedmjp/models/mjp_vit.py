"""The Masked Jigsaw Puzzle Vision Transformer: timm's ViT with a jigsaw-aware position step.

Only ``_pos_embed`` changes: in training it shuffles a block-wise random subset of patch
tokens and gives every shuffled position one shared, learnable unknown position embedding.
A dense absolute localization (DAL) head regresses the (row, col) of the non-occluded
positions from their position-embedding vectors. The timm ``pos_embed`` parameter is kept
as it is, so timm checkpoints load.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from .jigsaw import Jigsaw, draw_jigsaw

MJPMode = Literal["mjp", "naive"]


class DALHead(nn.Module):
    """Dense absolute localization regressor: position-embedding vector -> (row, col)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, dim)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(dim, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class MJPVisionTransformer(VisionTransformer):
    """ViT with Masked Jigsaw Puzzle position embeddings (Ren et al., CVPR 2023).

    Parameters
    ----------
    mjp_ratio:
        Fraction of patches shuffled in a training step (0 disables the shuffle).
    mjp_mode:
        ``"mjp"``: shuffled positions share the unknown position embedding and the DAL
        head is trained; ``"naive"``: shuffle only, ordinary position embeddings, no DAL.
    mjp_min_block, mjp_aspect:
        BEiT-style block selection: minimum block area (patches) and aspect-ratio range.
    mjp_per_sample:
        One mask and permutation per sample instead of one per batch (the reference).
    mjp_apply_prob:
        Probability that a training step is shuffled at all.
    dal_lambda, dal_normalize:
        Weight of the DAL L1 loss, and whether its (row, col) targets are scaled to [0, 1]
        (the reference uses unnormalised grid coordinates).
    """

    def __init__(
        self,
        *args,
        mjp_ratio: float = 0.1,
        mjp_mode: MJPMode = "mjp",
        mjp_min_block: int = 4,
        mjp_aspect: tuple[float, float] = (0.3, 1 / 0.3),
        mjp_per_sample: bool = False,
        mjp_apply_prob: float = 1.0,
        dal_lambda: float = 0.01,
        dal_normalize: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        if self.pos_embed is None or self.dynamic_img_size:
            raise ValueError("MJP needs a fixed-size learnable absolute position embedding")
        if mjp_mode not in ("mjp", "naive"):
            raise ValueError(f"mjp_mode must be 'mjp' or 'naive', got {mjp_mode!r}")
        if not 0.0 <= mjp_apply_prob <= 1.0:
            raise ValueError(f"mjp_apply_prob must be in [0, 1], got {mjp_apply_prob}")
        self.mjp_ratio = mjp_ratio
        self.mjp_mode = mjp_mode
        self.mjp_min_block = mjp_min_block
        self.mjp_aspect = tuple(mjp_aspect)
        self.mjp_per_sample = mjp_per_sample
        self.mjp_apply_prob = mjp_apply_prob
        self.dal_lambda = dal_lambda
        self.dal_normalize = dal_normalize
        dim = self.embed_dim
        if mjp_mode == "mjp":
            self.unk_pos_embed = nn.Parameter(torch.zeros(1, 1, dim))
            trunc_normal_(self.unk_pos_embed, std=0.02)
            self.dal_head: DALHead | None = DALHead(dim)
        else:
            self.unk_pos_embed = None
            self.dal_head = None
        # Seeded by the trainer for repeatable runs; None uses torch's global generator.
        self.jigsaw_generator: torch.Generator | None = None
        # The draw applied by the last forward pass (None: that pass was not shuffled).
        self.jigsaw: Jigsaw | None = None
        self._fixed_jigsaw: Jigsaw | None = None

    @property
    def grid_size(self) -> tuple[int, int]:
        return tuple(self.patch_embed.grid_size)

    @property
    def _patch_pos_offset(self) -> int:
        return 0 if self.no_embed_class else self.num_prefix_tokens

    @contextmanager
    def fixed_jigsaw(self, jigsaw: Jigsaw | None) -> Iterator[None]:
        """Use this draw (None: no shuffle) for every training forward inside the block."""
        previous, self._fixed_jigsaw = self._fixed_jigsaw, jigsaw if jigsaw is not None else _NO_SHUFFLE
        try:
            yield
        finally:
            self._fixed_jigsaw = previous

    def _draw(self, batch_size: int) -> Jigsaw | None:
        if self._fixed_jigsaw is not None:
            return None if self._fixed_jigsaw is _NO_SHUFFLE else self._fixed_jigsaw
        if not self.training or self.mjp_ratio <= 0:
            return None
        if self.mjp_apply_prob < 1.0:
            if torch.rand((), generator=self.jigsaw_generator).item() >= self.mjp_apply_prob:
                return None
        return draw_jigsaw(
            self.grid_size,
            batch_size,
            self.mjp_ratio,
            self.mjp_min_block,
            self.mjp_aspect,
            self.mjp_per_sample,
            self.jigsaw_generator,
        )

    def _pos_embed(self, x: torch.Tensor) -> torch.Tensor:
        self.jigsaw = self._draw(x.shape[0])
        if self.jigsaw is None:
            return super()._pos_embed(x)
        jigsaw = self.jigsaw.to(x.device)
        x = jigsaw.apply(x.flatten(1, 2) if x.ndim == 4 else x)
        offset = self._patch_pos_offset
        prefix_pos, patch_pos = self.pos_embed[:, :offset], self.pos_embed[:, offset:]
        if self.unk_pos_embed is not None:
            # Shuffled positions lose their own row: zero gradient there, the sum on unk.
            patch_pos = torch.where(jigsaw.mask.unsqueeze(-1), self.unk_pos_embed, patch_pos)
        patch_pos = patch_pos.expand(x.shape[0], -1, -1)
        prefix = []
        if self.cls_token is not None:
            prefix.append(self.cls_token.expand(x.shape[0], -1, -1))
        if self.reg_token is not None:
            prefix.append(self.reg_token.expand(x.shape[0], -1, -1))
        if self.no_embed_class:
            x = torch.cat(prefix + [x + patch_pos], dim=1)
        else:
            pos = torch.cat([prefix_pos.expand(x.shape[0], -1, -1), patch_pos], dim=1)
            x = torch.cat(prefix + [x], dim=1) + pos
        return self.pos_drop(x)

    def dal_targets(self) -> torch.Tensor:
        """(N, 2) grid coordinates (row, col) of every patch position."""
        grid_h, grid_w = self.grid_size
        rows, cols = torch.meshgrid(torch.arange(grid_h), torch.arange(grid_w), indexing="ij")
        coords = torch.stack([rows.flatten(), cols.flatten()], dim=1).float()
        if self.dal_normalize:
            coords = coords / torch.tensor([max(grid_h - 1, 1), max(grid_w - 1, 1)])
        return coords.to(self.pos_embed.device)

    def dal_loss(self) -> torch.Tensor:
        """Weighted L1 localization loss on the non-occluded positions of the last draw.

        Zero when the last forward was not shuffled or the model has no DAL head, as in
        the reference, where DAL is trained only on jigsaw steps.
        """
        if self.dal_head is None or self.jigsaw is None:
            return self.pos_embed.new_zeros(())
        visible = ~self.jigsaw.mask.to(self.pos_embed.device)  # (1 or B, N)
        patch_pos = self.pos_embed[0, self._patch_pos_offset :]
        error = F.l1_loss(self.dal_head(patch_pos), self.dal_targets(), reduction="none").sum(-1)
        per_draw = (error * visible).sum(-1) / visible.sum(-1).clamp(min=1) / 2
        return self.dal_lambda * per_draw.mean()


# Sentinel for "force no shuffle" inside ``fixed_jigsaw``.
_NO_SHUFFLE = Jigsaw(torch.zeros(1, 0, dtype=torch.bool), torch.zeros(1, 0, dtype=torch.long))
