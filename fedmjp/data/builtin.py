"""Data sets that ship inside installed wheels: nothing to download, ever."""

from __future__ import annotations

from functools import cache
from importlib.metadata import version
from typing import Any

import numpy as np
import skimage.data
import torch
from torch.utils.data import Dataset

from fedmjp.data.arrays import ImageArrayDataset, first_per_class, resize_batch, stratified_split
from fedmjp.data.disk_cache import cached_array, key_of
from fedmjp.data.sources import PHOTOS

CROPS_PER_PHOTO = 100
TEST_FRACTION = 0.2
# Crop side as a fraction of the photo's shorter side: big enough to show an object.
CROP_SCALE = (0.3, 0.8)


@cache
def _sklearn_bunch() -> Any:
    from sklearn.datasets import load_digits as sklearn_digits  # here: scikit-learn's import is slow

    return sklearn_digits()


def _sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as uint8 grey (N, 8, 8) with their labels: from the disk cache after the first
    process (importing scikit-learn costs every Ray worker about 1.5 s of CPU)."""
    key = {"set": "sklearn-digits", "scikit-learn": version("scikit-learn")}
    grey = cached_array("datasets", key_of({**key, "part": "images"}),
                        lambda: np.rint(_sklearn_bunch().images * (255.0 / 16.0)).astype(np.uint8))
    targets = cached_array("datasets", key_of({**key, "part": "targets"}),
                           lambda: _sklearn_bunch().target.astype(np.int64))
    return grey, targets


def load_digits(
    split: str, image_size: int, *, root: str | None, name: str | None, seed: int, limit_per_class: int | None
) -> ImageArrayDataset:
    """scikit-learn's 1,797 handwritten digits (8x8 grey, 17 levels) as RGB."""
    grey, targets = _sklearn_digits()
    idx = stratified_split(targets, split, seed, TEST_FRACTION)
    idx = idx[first_per_class(targets[idx], limit_per_class)]
    images = torch.from_numpy(grey[idx])[:, None].expand(-1, 3, -1, -1).contiguous()
    return ImageArrayDataset(images, targets[idx], [str(d) for d in range(10)], image_size)


def load_photos(
    split: str, image_size: int, *, root: str | None, name: str | None, seed: int, limit_per_class: int | None,
    crops_per_photo: int = CROPS_PER_PHOTO,
) -> PhotoCrops:
    """Seeded random square crops of scikit-image's photos; the class is the photo.

    Every call draws the same crops for both splits and keeps the last 20% of each
    photo's crops for test. Crops of one photo overlap across splits: this set is for
    attack demos on real photographs, not for measuring generalisation.
    """
    rng = np.random.default_rng(seed)
    num_test = int(round(crops_per_photo * TEST_FRACTION))
    chosen = slice(0, crops_per_photo - num_test) if split == "train" else slice(crops_per_photo - num_test, None)
    crops, targets = [], []
    for label, photo_name in enumerate(PHOTOS):
        height_width = _photo(photo_name).shape[1:]
        boxes = _crop_boxes(rng, height_width, crops_per_photo)[chosen][:limit_per_class]
        crops += [(photo_name, int(y), int(x), int(side)) for y, x, side in boxes]
        targets += [label] * len(boxes)
    return PhotoCrops(crops, np.array(targets), list(PHOTOS), image_size)


class PhotoCrops(Dataset):
    """Photo crops cut and resized when read, served as float32 (3, S, S) in [0, 1].

    Cutting all 800 up front costs a process seconds; a deployed ClientApp runs each message in
    a fresh process and reads one batch, so it pays only for that batch.
    """

    def __init__(self, crops: list[tuple[str, int, int, int]], targets: np.ndarray, classes: list[str],
                 image_size: int) -> None:
        self.crops = crops
        self.targets = np.asarray(targets, dtype=np.int64)
        self.classes = classes
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self._crop(index).float().div_(255.0), int(self.targets[index])

    @property
    def images(self) -> torch.Tensor:
        """Every crop as uint8 (N, 3, S, S), as ImageArrayDataset stores them (cuts them all)."""
        return torch.stack([self._crop(i) for i in range(len(self))])

    def _crop(self, index: int) -> torch.Tensor:
        photo_name, y, x, side = self.crops[index]
        return resize_batch(_photo(photo_name)[None, :, y : y + side, x : x + side], self.image_size)[0]


@cache
def _photo(photo_name: str) -> torch.Tensor:
    """One photo as uint8 (3, H, W); decoded once per process."""
    if photo_name == "motorcycle":
        image = skimage.data.stereo_motorcycle()[0]  # left view of the stereo pair
    else:
        image = getattr(skimage.data, photo_name)()
    return torch.from_numpy(np.ascontiguousarray(image[..., :3])).permute(2, 0, 1).contiguous()


def _crop_boxes(rng: np.random.Generator, shape: tuple[int, int], count: int) -> np.ndarray:
    """(count, 3) array of (top, left, side) for square crops inside an H x W photo."""
    height, width = shape
    sides = (rng.uniform(*CROP_SCALE, size=count) * min(height, width)).astype(int)
    tops = (rng.uniform(size=count) * (height - sides + 1)).astype(int)
    lefts = (rng.uniform(size=count) * (width - sides + 1)).astype(int)
    return np.stack([tops, lefts, sides], axis=1)
