"""The clients' data augmentation: random crops (reflect padding) and horizontal flips, per image."""

from __future__ import annotations

import functools

import torch
from torchvision.transforms import v2

PADDING = 4


@functools.cache
def _transform(size: int) -> v2.Transform:
    return v2.Compose([v2.RandomCrop(size, padding=PADDING, padding_mode="reflect"), v2.RandomHorizontalFlip()])


def augment(images: torch.Tensor) -> torch.Tensor:
    """A new random crop and flip of each image of (B, C, H, W), from torch's seeded generator."""
    transform = _transform(images.shape[-1])
    return torch.stack([transform(image) for image in images])
