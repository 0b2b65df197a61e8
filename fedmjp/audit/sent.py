"""A reconstruction as the receipt request carries it, both ways (apart from the scoring: the server sends
reconstructions without importing what the client scores them with)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..protocol import SentReconstruction

if TYPE_CHECKING:
    from ..attacks.base import Reconstruction

# What the server sends of one reconstruction: images, its start, recovered labels, and a patch-reading
# attack's patches with their positions (None where the attack has none).
Sent = tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]


def sent_of(recon: Reconstruction) -> Sent:
    return recon.images, recon.start, recon.labels, recon.patches, recon.patch_positions


def to_send(recon: Reconstruction) -> SentReconstruction:
    """What the receipt request carries of one reconstruction (NumPy, on the CPU)."""
    return SentReconstruction(*(None if t is None else t.detach().cpu().numpy() for t in sent_of(recon)))


def received(sent: SentReconstruction) -> Sent:
    """A reconstruction of a receipt request, as the client scores it (tensors)."""
    arrays = (sent.images, sent.start, sent.labels, sent.patches, sent.positions)
    images, start, labels, patches, positions = (None if a is None else torch.from_numpy(a) for a in arrays)
    return images, start, labels, patches, positions
