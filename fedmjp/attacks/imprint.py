"""Imprint: a dishonest server plants weights in a timm ViT so that one gradient spells out the patches.

Weight-only (the clients build the architecture from the scenario; only the weights sent change), after
Robbing the Fed's imprint bins (Fowl et al., ICLR 2022), built from the ViT's own blocks:

- the patch embedding copies each patch's p = 3*P*P normalised values into channels [0, p) and writes a
  known constant ``A`` into channel p, so LayerNorm can be undone (a known-zero channel reads -mu/sigma,
  the constant one (A - mu)/sigma). Where p values and the position code do not fit the D channels (ViT-S/16
  at 224 px: 768 values, 196 positions, 384 channels), it writes the patch's projection onto the top
  principal directions of the server's own patches into the channels left: the patch comes back as that
  projection, the closest the embedding allows, and the threat model says ``patch_read: projection``;
- ``pos_embed`` writes position n as the binary code of n + 1 into ceil(log2(N + 1)) spare channels (an
  MJP-masked position carries the shared unknown embedding, planted to zero: its code reads 0 and its position
  is reported -1);
- the CLS token carries a flag that every measurement direction weighs so negatively that CLS is in no bin;
- in every block but the last (nothing reads patch tokens after the last attention) attention is silenced
  and the MLP becomes a bank of cumulative bins along a random direction w of the patch channels: fc1 rows
  ``k * w`` with thresholds at quantiles of ``w . token`` over the server's own images, fc2 columns equal and
  tiny, writing into one sink channel so the residual stream stays clean for the next block.

For consecutive thresholds, (dW_j - dW_{j+1}) / (db_j - db_{j+1}) is the LayerNorm-ed token of a token alone
between them, exactly. Blocks bin along different directions, so a token sharing a bin in one is alone in
another. MJP hides where a patch was, not what it held: contents come back all the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import timm
import torch
from scipy.cluster.hierarchy import fcluster, linkage
from torch import Tensor, nn

from ..models import from_model_input, to_model_input
from ..models.patches import flat_tiles, from_tiles
from .base import POS_EMBED, NotApplicable, Observation, Reconstruction, ThreatModel, Timer, patch_offset
from .base import register_attack
from .imprint_evasion import BINS_PER_DIRECTION, KnownCheck, decorrelate, fit_ranges, hide_rank_one
from .imprint_evasion import random_part_channels, silence_attention, vary_sink_weights
from .placement import place_by_edges, place_greedily

__all__ = ["Imprint", "ImprintLayout", "binning_blocks", "plant_imprint", "server_images"]

CONSTANT = 1.0  # the known constant channel's value (before LayerNorm)
CODE = 1.0  # a set bit of the position code
FLAG = 1.0  # the CLS token's flag channel
FLAG_WEIGHT = 10.0  # how strongly each measurement pushes the flagged CLS below every threshold
QUIET_FLAG_WEIGHT = 1.0  # enough (CLS reads about -14, patches -4 at the lowest): within the check's ranges
SHARPNESS = 500.0  # k in gaps between thresholds: GELU's soft step spans about 1% of a bin
SINK_WEIGHT = 1e-9  # fc2's equal columns: tiny, so the sink channel stays small over all blocks
VALID_TOLERANCE = 0.003  # a lone token's recovered u has mean 0 and mean square 1 (LayerNorm output): measured
# within 1.5e-4 of it; a mix of two similar tokens from 0.01 up
CODE_TOLERANCE = 0.05  # ... and its position code bits read 0 or CODE (two tokens' mix reads between)
DUPLICATE = 0.5 / 255  # two reads of one token differ by less than this in every value
# Reads of one image's signature agree within this in every channel: measured 2e-5 (median) from the image's own,
# against 0.15 or more between two images' (ViT-Ti/4, a CIFAR-10 batch of 32); stray mixtures read farther off.
SIGNATURE_TOLERANCE = 1e-3
RESERVED = 4  # channels besides the patch, the code and the signature: constant, flag, a known zero, sink
SIGNATURE = 8  # channels of the image signature: a random projection of the image's mean patch
SIGNATURE_BLOCK = 0  # the block whose attention writes it (its MLP bins as the others do)
DIRECTION_COS = 0.99  # |cos| of two fc1 rows on the patch and code channels that are one bank's
PLANTED_SHARE = 0.9  # share of a block's units in banks that makes it a binning block


@dataclass(frozen=True)
class ImprintLayout:
    """Which residual channel carries what: patch values, constant, position code, flag, known zero, sink."""

    pixels: int  # p = 3*P*P
    positions: int  # N patch positions
    dim: int  # D

    @property
    def bits(self) -> int:
        """Position code width: positions are coded 1..N, 0 is no position."""
        return self.positions.bit_length()

    @property
    def values(self) -> int:
        """Channels that hold the patch: all p values, or as many directions as the channels leave."""
        return min(self.pixels, self.dim - self.bits - RESERVED - SIGNATURE)

    @property
    def projected(self) -> bool:
        return self.values < self.pixels

    @property
    def constant(self) -> int:
        return self.values

    @property
    def code(self) -> slice:
        return slice(self.values + 1, self.values + 1 + self.bits)

    @property
    def flag(self) -> int:
        return self.values + 1 + self.bits

    @property
    def signature(self) -> slice:
        """Channels every token of one image shares: which image the token came from."""
        return slice(self.flag + 1, self.flag + 1 + SIGNATURE)

    @property
    def zero(self) -> slice:
        """Channels no token ever writes (at least one): they read -mu/sigma after LayerNorm."""
        return slice(self.signature.stop, self.dim - 1)

    @property
    def sink(self) -> int:
        return self.dim - 1

    @classmethod
    def of(cls, model: nn.Module) -> ImprintLayout:
        """The layout for a model, or NotApplicable with the reason in one line."""
        if getattr(model, "pos_embed", None) is None or not isinstance(model.pos_embed, nn.Parameter):
            raise NotApplicable("imprint: needs a learnable absolute position embedding (pos_embed)")
        if getattr(model, "dynamic_img_size", False):
            raise NotApplicable("imprint: needs a fixed-size position embedding (dynamic_img_size is set)")
        if model.cls_token is None or getattr(model, "reg_token", None) is not None or model.global_pool != "token":
            raise NotApplicable("imprint: needs a CLS token read by the head and no register tokens")
        if not isinstance(model.norm_pre, nn.Identity) or not isinstance(model.patch_embed.norm, nn.Identity):
            raise NotApplicable("imprint: a LayerNorm before the blocks is not planted (norm_pre / patch norm)")
        if len(model.blocks) < 2:
            raise NotApplicable("imprint: needs at least two blocks (the last one cannot bin)")
        patch = model.patch_embed.patch_size[0]
        layout = cls(3 * patch * patch, model.patch_embed.num_patches, model.embed_dim)
        if layout.values < 1:
            raise NotApplicable(
                f"imprint: the {layout.bits}-bit position code, the {SIGNATURE}-channel image signature and "
                f"{RESERVED} reserved channels leave none of the {layout.dim} channels for the patch"
            )
        return layout


def binning_blocks(model: nn.Module) -> range:
    """Every block but the last: the last block's attention is what carries patch tokens into the loss."""
    return range(len(model.blocks) - 1)


def server_images(image_size: int, count: int = 256, *, source: str = "photos", root: str | None = None,
                  seed: int = 0) -> Tensor:
    """The server's own images (a built-in public set by default, never a client's partition): (count, 3, S, S)."""
    from ..data.loading import load_dataset

    dataset = load_dataset(source, "train", image_size, root=root, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    index = torch.randperm(len(dataset), generator=generator)[:count]
    return torch.stack([dataset[int(i)][0] for i in index])


def _build(model_name: str, model_kwargs: dict[str, Any], weights: dict[str, Tensor]) -> nn.Module:
    model = timm.create_model(model_name, **model_kwargs)
    model.load_state_dict(weights, strict=True)
    return model.eval()


@torch.no_grad()
def plant_imprint(
    model_name: str,
    weights: dict[str, Tensor],
    images: Tensor,
    *,
    model_kwargs: dict[str, Any] | None = None,
    seed: int = 0,
    knows_check: KnownCheck = "none",
) -> dict[str, Tensor]:
    """The weights to send: the global ``weights`` with the imprint planted, thresholds from ``images``.

    ``images`` are the server's own (B, 3, H, W) in [0, 1]. ``knows_check``: which client model check the
    server plants past (see :mod:`.imprint_evasion`). Raises NotApplicable where the model cannot be
    planted. Every parameter keeps its name, shape and dtype.
    """
    model = _build(model_name, model_kwargs or {}, weights)
    layout = ImprintLayout.of(model)
    generator = torch.Generator().manual_seed(seed)
    _plant_embedding(model, layout, images)
    # The server's tokens block by block through the planted model: each block's thresholds see what its
    # bins will see (earlier blocks' sink writes included).
    tokens = model._pos_embed(model.patch_embed(to_model_input(model, images.float())))
    for index in binning_blocks(model):
        block = model.blocks[index]
        _silence_attention(block, knows_check)
        seen = tokens  # what this block's MLP sees: its input, plus the signature in the signature block
        if index == SIGNATURE_BLOCK:
            _plant_signature(block, layout, generator)
            seen = tokens + block.attn(block.norm1(tokens))
        measured = block.norm2(seen[:, model.num_prefix_tokens :]).reshape(-1, layout.dim).double()
        mlp = block.mlp
        hidden = mlp.fc1.out_features
        # One bank of bins along one direction, or (past the current check) several coarser ones.
        per_direction = hidden if knows_check != "current" else BINS_PER_DIRECTION
        for start in range(0, hidden, per_direction):
            units = slice(start, min(start + per_direction, hidden))
            w = _direction(layout, generator, FLAG_WEIGHT if knows_check != "current" else QUIET_FLAG_WEIGHT)
            thresholds = _quantile_thresholds(measured @ w.double(), units.stop - units.start)
            sharpness = SHARPNESS / float(thresholds.diff().median().clamp(min=1e-6)) if len(thresholds) > 1 \
                else SHARPNESS
            mlp.fc1.weight[units] = sharpness * w
            mlp.fc1.bias[units] = -sharpness * thresholds
        mlp.fc2.weight.zero_()
        mlp.fc2.weight[layout.sink] = SINK_WEIGHT
        mlp.fc2.bias.zero_()
        if knows_check != "none":
            vary_sink_weights(mlp.fc2, layout.sink, generator)
            hide_rank_one(mlp.fc1, random_part_channels(layout.zero, knows_check), generator)
        if knows_check == "current":
            fit_ranges(block, index, layout.zero)
            decorrelate(block, measured, layout.code.stop, generator)
            fit_ranges(block, index, layout.zero)  # the decorrelating part may push an entry past a bound
        tokens = block(tokens)
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def _plant_embedding(model: nn.Module, layout: ImprintLayout, images: Tensor) -> None:
    proj = model.patch_embed.proj
    proj.weight.zero_()
    proj.weight.view(layout.dim, -1)[: layout.values].copy_(_patch_basis(model, layout, images).T)
    proj.bias.zero_()
    proj.bias[layout.constant] = CONSTANT
    model.pos_embed.zero_()
    offset = patch_offset(model)
    model.pos_embed[0, offset:, layout.code] = CODE * _bits(torch.arange(layout.positions) + 1, layout.bits)
    model.cls_token.zero_()
    model.cls_token[0, 0, layout.flag] = FLAG
    if getattr(model, "unk_pos_embed", None) is not None:
        model.unk_pos_embed.zero_()  # a masked MJP position: no code


def _plant_signature(block: nn.Module, layout: ImprintLayout, generator: torch.Generator) -> None:
    """Attention with zero queries and keys is uniform over an image's tokens: its values, a random projection
    of each token's patch channels, average to one signature per image, which the projection writes into the
    signature channels of every token of that image. MJP shuffles tokens within an image: the mean is the same."""
    attn, dim = block.attn, layout.dim
    projection = torch.randn(SIGNATURE, layout.values, generator=generator)
    attn.qkv.weight.zero_()
    attn.qkv.weight[2 * dim : 2 * dim + SIGNATURE, : layout.values] = projection / projection.norm(dim=1, keepdim=True)
    if attn.qkv.bias is not None:
        attn.qkv.bias.zero_()
    attn.proj.weight.zero_()
    attn.proj.weight[layout.signature, :SIGNATURE] = torch.eye(SIGNATURE)
    attn.proj.bias.zero_()
    block.norm1.weight.fill_(1.0)
    block.norm1.bias.zero_()


def _patch_basis(model: nn.Module, layout: ImprintLayout, images: Tensor) -> Tensor:
    """(p, values) orthonormal columns the embedding writes each patch onto: the identity where the patch fits,
    otherwise :func:`principal_patches`."""
    return principal_patches(model, images, layout.values) if layout.projected else torch.eye(layout.pixels)


def principal_patches(model: nn.Module, images: Tensor, count: int) -> Tensor:
    """(p, count) the top eigenvectors of the server's patches' second moment (uncentred, so the mean patch is in
    the span): the rank-``count`` projection closest to them in mean square."""
    pixels = 3 * model.patch_embed.patch_size[0] ** 2
    patches = flat_tiles(to_model_input(model, images.float()), model.patch_embed.patch_size[0])
    patches = patches.reshape(-1, pixels).double()
    _, vectors = torch.linalg.eigh(patches.T @ patches / len(patches))  # ascending eigenvalues
    return vectors[:, -count:].flip(1).float()


def _silence_attention(block: nn.Module, knows_check: KnownCheck) -> None:
    """Attention adds nothing; norm2 is a plain LayerNorm; layer scale passes."""
    silence_attention(block, knows_check)
    block.norm2.weight.fill_(1.0)
    block.norm2.bias.zero_()
    for scale in (block.ls1, block.ls2):
        if hasattr(scale, "gamma"):
            scale.gamma.fill_(1.0)


def _direction(layout: ImprintLayout, generator: torch.Generator, flag_weight: float) -> Tensor:
    """A random unit direction over the patch values and the position code (equal patches at two positions,
    flat sky, still measure apart), with the CLS flag weighed down: CLS reads +sqrt(D-1) on the flag and
    about 0 on the known zeros, a patch the same value on both."""
    w = torch.zeros(layout.dim)
    w[: layout.code.stop] = torch.randn(layout.code.stop, generator=generator)
    w[layout.constant] = 0.0
    w /= w.norm()
    w[layout.flag], w[layout.zero.start] = -flag_weight, flag_weight
    return w


def _quantile_thresholds(measured: Tensor, hidden: int) -> Tensor:
    """``hidden`` ascending thresholds at the (j + 0.5)/hidden quantiles of the server's measurements."""
    levels = (torch.arange(hidden, dtype=torch.float64) + 0.5) / hidden
    return torch.quantile(measured, levels).float()


# --- decoding: what the reply says ---------------------------------------------------------------


def directions(rows: Tensor, layout: ImprintLayout) -> list[Tensor]:
    """The banks of a block: groups of fc1 units (index tensors) whose rows point one way on the channels tokens
    occupy (patch values and position code), whatever they hold elsewhere."""
    unit = torch.nn.functional.normalize(rows[:, : layout.code.stop].double(), dim=1)
    together = (unit @ unit.T).abs() > DIRECTION_COS
    free = torch.ones(len(rows), dtype=torch.bool)
    banks = []
    for first in range(len(rows)):
        if free[first]:
            members = (together[first] & free).nonzero().flatten()
            free[members] = False
            banks.append(members)
    return banks


def _lone_tokens(grads: dict[str, Tensor], weights: dict[str, Tensor], index: int, layout: ImprintLayout) -> Tensor:
    """Recovered LayerNorm-ed tokens (M, D) of the bins that held one token, from one binning block.

    Each unit's gradient is divided by its fc2 sink weight (which scales it), so the units of a bank are
    comparable; the bin between consecutive thresholds of a bank is the difference of its two units."""
    block = f"blocks.{index}."
    rows, bias = weights[block + "mlp.fc1.weight"].double(), weights[block + "mlp.fc1.bias"].double()
    sink = weights[block + "mlp.fc2.weight"][layout.sink].double()
    scale = sink / sink.abs().max()
    dw_all = grads[block + "mlp.fc1.weight"].double() / scale[:, None]
    db_all = grads[block + "mlp.fc1.bias"].double() / scale
    gamma, beta = weights[block + "norm2.weight"].double(), weights[block + "norm2.bias"].double()
    found = []
    for bank in directions(rows, layout):
        sharpness = rows[bank, : layout.code.stop].norm(dim=1)
        order = bank[torch.argsort(-bias[bank] / sharpness)]  # ascending thresholds
        dw, db = dw_all[order], db_all[order]
        dw = torch.cat([dw[:-1] - dw[1:], dw[-1:]])
        db = torch.cat([db[:-1] - db[1:], db[-1:]])
        nonzero = db != 0
        u = (dw[nonzero] / db[nonzero, None] - beta) / gamma.where(gamma != 0, 1.0)  # back to LayerNorm's output
        # A channel norm2 made constant (weight 0) is a known-zero one: it read what the others read.
        u[:, gamma == 0] = u[:, layout.zero][:, gamma[layout.zero] != 0].mean(1, keepdim=True)
        # A lone token reads as a LayerNorm output: mean 0 and mean square 1. Empty bins and mixtures do not.
        valid = (u.mean(1).abs() < VALID_TOLERANCE) & ((u.pow(2).mean(1) - 1).abs() < VALID_TOLERANCE)
        found.append(u[valid])
    return torch.cat(found)


def _undo_layernorm(u: Tensor, layout: ImprintLayout) -> Tensor:
    """Tokens before LayerNorm: the known-zero channels give -mu/sigma, the constant (A - mu)/sigma."""
    zero = u[:, layout.zero].mean(1, keepdim=True)
    sigma = CONSTANT / (u[:, layout.constant : layout.constant + 1] - zero)
    return u * sigma - zero * sigma


def _bits(numbers: Tensor, width: int) -> Tensor:
    """(len(numbers), width) float: the binary digits of each number, least significant first."""
    return ((numbers[:, None] >> torch.arange(width)) & 1).float()


def _clean_code(tokens: Tensor, layout: ImprintLayout) -> Tensor:
    """(M,) bool: a single token's code bits are 0 or CODE; a mix of tokens at two positions reads between."""
    code = tokens[:, layout.code]
    return (torch.minimum(code.abs(), (code - CODE).abs()) < CODE_TOLERANCE).all(1)


def _positions(tokens: Tensor, layout: ImprintLayout) -> Tensor:
    """(M,) position from the code, -1 where it reads 0 (MJP's unknown embedding) or beyond the grid."""
    number = ((tokens[:, layout.code] > CODE / 2).long() << torch.arange(layout.bits)).sum(1)
    return torch.where((number >= 1) & (number <= layout.positions), number - 1, -1)


def _images_of(signatures: Tensor, batch: int) -> Tensor:
    """(M,) which image each read token came from: tokens whose signatures agree within
    ``SIGNATURE_TOLERANCE`` (single linkage) are one image's, numbered by size; beyond the batch's ``batch``
    largest groups (a stray read), -1."""
    if len(signatures) < 2:
        return torch.zeros(len(signatures), dtype=torch.long)
    tree = linkage(signatures.double().numpy(), method="single", metric="chebyshev")
    labels = torch.from_numpy(fcluster(tree, t=SIGNATURE_TOLERANCE, criterion="distance").astype("int64"))
    _, inverse, counts = labels.unique(return_inverse=True, return_counts=True)
    rank = torch.empty_like(counts)
    rank[torch.argsort(counts, descending=True, stable=True)] = torch.arange(len(counts))
    images = rank[inverse]
    return torch.where(images < batch, images, -1)


def _dedupe(patches: Tensor, keys: Tensor) -> Tensor:
    """The index of one copy of each token seen in several blocks: same key (position, or image and position),
    values within half an 8-bit step (a lone token is read to about a tenth of one; rounding to 8 bits would
    split copies that straddle a step)."""
    keep = []
    for key in keys.unique():
        index = (keys == key).nonzero().flatten()
        near = torch.cdist(patches[index], patches[index], p=float("inf")) <= DUPLICATE
        taken = torch.zeros(len(index), dtype=torch.bool)
        for i in range(len(index)):
            if not taken[i]:
                keep.append(int(index[i]))
                taken |= near[i]
    return torch.tensor(sorted(keep), dtype=torch.long)


def assemble(patches: Tensor, positions: Tensor, batch: int, grid: tuple[int, int], patch: int,
             owners: Tensor | None = None) -> Tensor:
    """(B, 3, H, W) images from recovered patches; gaps stay grey (0.5).

    Patches whose image is known (``owners`` (M,), -1 where not) go to that image: at their position, or
    (no position: MJP's shuffled ones) into its gaps by edge continuity with the neighbours placed. The rest,
    position by position in raster order, are assigned to the images by edge continuity with the neighbours
    already placed (Hungarian); patches without a position then fill the remaining gaps the same way.
    """
    n = grid[0] * grid[1]
    tiles = torch.full((batch, n, 3, patch, patch), 0.5)
    filled = torch.zeros(batch, n, dtype=torch.bool)
    shaped = patches.reshape(-1, 3, patch, patch)
    owners = torch.full_like(positions, -1) if owners is None else owners
    for image in range(batch):
        for index in ((owners == image) & (positions >= 0)).nonzero().flatten().tolist():
            slot = (image, int(positions[index]))
            if not filled[slot]:
                tiles[slot], filled[slot] = shaped[index], True
        gaps = [(image, int(pos)) for pos in (~filled[image]).nonzero().flatten()]
        shuffled = shaped[(owners == image) & (positions < 0)]
        for candidate, slot in place_greedily(tiles, filled, shuffled, gaps, grid):
            tiles[gaps[slot]], filled[gaps[slot]] = shuffled[candidate], True
    shaped, positions = shaped[owners < 0], positions[owners < 0]
    for pos in range(n):
        _place(tiles, filled, shaped[positions == pos], [(b, pos) for b in range(batch)], grid)
    unplaced = shaped[positions < 0]
    gaps = (~filled).nonzero().tolist()
    if len(unplaced) and gaps:
        _place(tiles, filled, unplaced, [tuple(g) for g in gaps], grid)
    return from_tiles(tiles, grid)


def _place(tiles: Tensor, filled: Tensor, candidates: Tensor, slots: list[tuple[int, int]],
           grid: tuple[int, int]) -> None:
    """Fill the empty ``slots`` with ``candidates`` by edge continuity (all of one side, as many as the other has)."""
    slots = [s for s in slots if not filled[s]]
    if not len(candidates) or not slots:
        return
    for r, c in zip(*place_by_edges(tiles, filled, candidates, slots, grid)):
        b, pos = slots[c]
        tiles[b, pos], filled[b, pos] = candidates[r], True


class Imprint:
    """Plant imprint bins in the weights a client gets, then read its patches off its gradient.

    ``plant`` is the server's step before sending; ``__call__`` decodes the reply to the planted weights
    (``obs.weights`` are the planted weights that were sent).
    """

    name = "imprint"

    def __init__(self, seed: int = 0, knows_check: KnownCheck = "none") -> None:
        self.seed = seed
        self.knows_check = knows_check

    def plant(self, model_name: str, weights: dict[str, Tensor], images: Tensor,
              model_kwargs: dict[str, Any] | None = None) -> dict[str, Tensor]:
        return plant_imprint(model_name, weights, images, model_kwargs=model_kwargs, seed=self.seed,
                             knows_check=self.knows_check)

    def reads(self, model_name: str, weights: dict[str, Tensor], model_kwargs: dict[str, Any]) -> list[str]:
        with torch.device("meta"):
            model = timm.create_model(model_name, **model_kwargs)
        layout = ImprintLayout.of(model)
        return [f"blocks.{i}.mlp.fc1.{part}" for i in binning_blocks(model) if _is_planted(weights, i, layout)
                for part in ("weight", "bias")]

    def __call__(self, obs: Observation) -> Reconstruction:
        if obs.kind == "update" and (obs.local_steps not in (None, 1) or obs.local_optimizer not in (None, "sgd")):
            raise NotApplicable("imprint: reads one gradient (or one plain SGD step), not a multi-step update")
        with torch.device("meta"):
            model = timm.create_model(obs.model_name, **obs.model_kwargs)
        layout = ImprintLayout.of(model)
        if POS_EMBED not in obs.tensors:
            raise NotApplicable("imprint: the reply has no pos_embed gradient (the clients' position embedding is "
                                "not learnable, so the planted position code never reaches them)")
        blocks = [i for i in binning_blocks(model) if _is_planted(obs.weights, i, layout)]
        if not blocks:
            raise NotApplicable("imprint: the weights sent carry no planted block")
        capacity = sum(int(obs.weights[f"blocks.{i}.mlp.fc1.bias"].numel()) for i in blocks)
        tokens = obs.num_examples * layout.positions
        if tokens > capacity:
            raise NotApplicable(f"imprint: {tokens} patch tokens are more than the {capacity} bins hold")
        with Timer() as timer:
            found = [_lone_tokens(obs.tensors, obs.weights, i, layout) for i in blocks]
            raw = _undo_layernorm(torch.cat(found), layout)
            raw = raw[_clean_code(raw, layout)]
            positions = _positions(raw, layout)
            patch = model.patch_embed.patch_size[0]
            # The embedding wrote basis^T x into the patch channels: basis @ that is x (or its projection).
            basis = obs.weights["patch_embed.proj.weight"].reshape(layout.dim, -1)[: layout.values].float()
            normalised = (raw[:, : layout.values].float() @ basis).reshape(-1, 3, patch, patch)
            values = from_model_input(model, normalised).clamp(0, 1).flatten(1)
            owners = _images_of(raw[:, layout.signature], obs.num_examples)
            keep = _dedupe(values, owners * (layout.positions + 1) + positions)
            patches, positions, owners = values[keep], positions[keep], owners[keep]
            images = assemble(patches, positions, obs.num_examples, tuple(model.patch_embed.grid_size), patch,
                              owners)
        return Reconstruction(
            images=images,
            threat_model=ThreatModel(architecture=obs.model_name, labels="none", server="malicious",
                                     patch_read="projection" if layout.projected else "exact",
                                     knows_check=None if self.knows_check == "none" else self.knows_check),
            seconds=timer.seconds,
            start=torch.full_like(images, 0.5),
            patches=patches,
            patch_positions=positions,
            info={"binning_blocks": len(blocks), "patches_recovered": len(patches),
                  "patch_channels": f"{layout.values} of {layout.pixels} values",
                  "patches_with_position": int((positions >= 0).sum()), "tokens": tokens,
                  "images_told_apart": int(owners.max()) + 1 if len(owners) else 0},
        )


def _is_planted(weights: dict[str, Tensor], index: int, layout: ImprintLayout) -> bool:
    """A binning block: nearly all fc1 units belong to a bank (share a direction with another unit)."""
    fc1 = weights.get(f"blocks.{index}.mlp.fc1.weight")
    if fc1 is None or f"blocks.{index}.mlp.fc1.bias" not in weights:
        return False
    banked = sum(len(bank) for bank in directions(fc1, layout) if len(bank) > 1)
    return banked >= PLANTED_SHARE * len(fc1)


@register_attack("imprint")
def build_imprint(seed: int = 0, knows_check: KnownCheck = "none", **budget: Any) -> Imprint:
    """Imprint (planting). Budget options (steps, restarts) are accepted and ignored: it reads the reply once."""
    return Imprint(seed=seed, knows_check=knows_check)

