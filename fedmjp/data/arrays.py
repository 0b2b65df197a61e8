"""The one in-memory data set every loader returns, and helpers to fill it."""

from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import version

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF

from .disk_cache import cached_array, key_of


class ImageArrayDataset(Dataset):
    """Images kept as uint8 (N, 3, H, W) and served as float32 (3, S, S) in [0, 1].

    Square images of one size are stored at their own size and resized per item, so
    CIFAR at 224 px costs 150 MB instead of 7.5 GB; resizing one item takes ~0.2 ms.
    """

    def __init__(
        self,
        images: torch.Tensor,
        targets: np.ndarray,
        classes: Sequence[str],
        image_size: int,
    ) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be uint8 (N, 3, H, W), got {images.dtype} {tuple(images.shape)}")
        if len(images) != len(targets):
            raise ValueError(f"{len(images)} images but {len(targets)} targets")
        self.images = images
        self.targets = np.asarray(targets, dtype=np.int64)
        self.classes = [str(c) for c in classes]
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index].float().div_(255.0)
        size = self.image_size
        if image.shape[-2:] != (size, size):
            image = F.interpolate(
                image[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False
            )[0].clamp_(0.0, 1.0)  # bilinear weights are convex; clamp only float rounding
        return image, int(self.targets[index])


def stack_images(images: Sequence[np.ndarray | torch.Tensor], image_size: int) -> torch.Tensor:
    """Stack HWC or CHW uint8 RGB images into (N, 3, H, W) uint8.

    Square images of a common size are kept as they are (resized per item later);
    anything else is resized (shorter side to ``image_size``) and centre-cropped now.
    """
    chw = [_to_chw(im) for im in images]
    if not chw:
        return torch.empty((0, 3, image_size, image_size), dtype=torch.uint8)
    first = chw[0].shape
    if first[1] == first[2] and all(im.shape == first for im in chw):
        return torch.stack(chw)
    return torch.stack([_resize_center_crop(im, image_size) for im in chw])


def resize_batch(images: torch.Tensor, image_size: int) -> torch.Tensor:
    """Resize uint8 (N, 3, H, W) images to (N, 3, S, S) uint8, bilinear with antialias."""
    return TF.resize(images, [image_size, image_size], antialias=True)


def first_per_class(targets: np.ndarray, limit: int | None) -> np.ndarray:
    """Indices of the first ``limit`` items of each class, in data set order."""
    if limit is None:
        return np.arange(len(targets))
    keep = np.zeros(len(targets), dtype=bool)
    for label in np.unique(targets):
        keep[np.flatnonzero(targets == label)[:limit]] = True
    return np.flatnonzero(keep)


def stratified_split(targets: np.ndarray, split: str, seed: int, test_fraction: float = 0.2) -> np.ndarray:
    """Sorted indices of ``split`` in a seeded, stratified train/test split: scikit-learn's, cut once per machine
    (importing scikit-learn costs every process of a simulation about 1 s of CPU)."""
    key = key_of({"split": split, "seed": int(seed), "test_fraction": float(test_fraction),
                  "scikit-learn": version("scikit-learn")}, np.ascontiguousarray(targets, dtype=np.int64).tobytes())
    return cached_array("splits", key, lambda: _stratified_split(targets, split, seed, test_fraction))


def _stratified_split(targets: np.ndarray, split: str, seed: int, test_fraction: float) -> np.ndarray:
    from sklearn.model_selection import train_test_split  # imported here: scikit-learn's import is slow

    train, test = train_test_split(
        np.arange(len(targets)), test_size=test_fraction, stratify=targets, random_state=seed
    )
    return np.sort(train if split == "train" else test)


def _to_chw(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(image, np.ndarray):
        # PIL hands out read-only arrays; torch wants its own writable memory.
        image = torch.from_numpy(np.require(image, requirements=["C", "W"])).permute(2, 0, 1)
    return image


def _resize_center_crop(image: torch.Tensor, image_size: int) -> torch.Tensor:
    image = TF.resize(image, [image_size], antialias=True)  # shorter side, keeps aspect ratio
    return TF.center_crop(image, [image_size, image_size])
