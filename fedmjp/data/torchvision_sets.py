"""Real data sets read with torchvision: CIFAR-10/100 (downloaded once) and ImageFolder."""

from __future__ import annotations

import os
from functools import lru_cache
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from torchvision.datasets import CIFAR10, CIFAR100, ImageFolder

from fedmjp.data.arrays import ImageArrayDataset, first_per_class, stack_images, stratified_split
from fedmjp.data.disk_cache import cached_array, key_of
from fedmjp.data.sources import FIXED_CLASSES, as_image_folder, cifar_root


def load_cifar10(
    split: str, image_size: int, *, root: str | None, name: str | None, seed: int, limit_per_class: int | None
) -> ImageArrayDataset:
    return _load_cifar(CIFAR10, split, image_size, root, limit_per_class)


def load_cifar100(
    split: str, image_size: int, *, root: str | None, name: str | None, seed: int, limit_per_class: int | None
) -> ImageArrayDataset:
    return _load_cifar(CIFAR100, split, image_size, root, limit_per_class)


def _load_cifar(
    cls: type[CIFAR10], split: str, image_size: int, root: str | None, limit_per_class: int | None
) -> ImageArrayDataset:
    """torchvision's CIFAR (downloaded into ``root`` when it is not there), or its images as files when ``root``
    holds ``train/CLASS/*`` and ``test/CLASS/*`` (a subset, or a copy as JPEGs)."""
    directory = cifar_root(root)
    if as_image_folder(root):
        images, targets, classes = _decode_folder(str((directory / split).resolve()), image_size, limit_per_class)
        expected = FIXED_CLASSES[cls.__name__.lower()]
        if len(classes) != expected:
            raise ValueError(f"data.root: {directory / split} has {len(classes)} class folders, not "
                             f"{cls.__name__}'s {expected}")
        return ImageArrayDataset(images, targets, classes, image_size)
    try:
        # download=True is a no-op when the files are already there.
        data = cls(str(directory), train=split == "train", download=True)
    except (RuntimeError, OSError) as error:
        raise ValueError(
            f"data.root: no {cls.__name__} in {directory} and it could not be downloaded ({error})"
        ) from error
    targets = np.asarray(data.targets, dtype=np.int64)
    keep = first_per_class(targets, limit_per_class)
    images = torch.from_numpy(data.data[keep]).permute(0, 3, 1, 2).contiguous()
    return ImageArrayDataset(images, targets[keep], data.classes, image_size)


def load_imagefolder(
    split: str, image_size: int, *, root: str | None, name: str | None, seed: int, limit_per_class: int | None
) -> ImageArrayDataset:
    """``root/<split>/<class>/*`` when ``root/<split>`` exists, else a seeded 80/20 split of ``root``."""
    if root is None:
        raise ValueError("data.root: required for source 'imagefolder'")
    directory = Path(root).expanduser()
    if not directory.is_dir():
        raise ValueError(f"data.root: {root} does not exist")
    if (directory / split).is_dir():
        images, targets, classes = _decode_folder(str((directory / split).resolve()), image_size, limit_per_class)
        return ImageArrayDataset(images, targets, classes, image_size)
    images, targets, classes = _decode_folder(str(directory.resolve()), image_size, None)
    keep = stratified_split(targets, split, seed)
    keep = keep[first_per_class(targets[keep], limit_per_class)]
    return ImageArrayDataset(images[keep], targets[keep], classes, image_size)


# Decoding is the slow part (about 1 s for 10,000 CIFAR-sized files): once per process, since simulated clients in
# one process each ask for the same folder, and once per machine for folders whose images fit in
# DECODED_CACHE_BYTES, read back by every later process (the CLI's check, the ServerApp, each Ray worker).
DECODED_CACHE_BYTES = 512 * 2**20


@lru_cache(maxsize=4)
def _decode_folder(
    directory: str, image_size: int, limit_per_class: int | None
) -> tuple[torch.Tensor, np.ndarray, list[str]]:
    try:
        folder = ImageFolder(directory)
    except FileNotFoundError as error:
        raise ValueError(f"data.root: {error}") from error
    targets = np.asarray(folder.targets, dtype=np.int64)
    keep = first_per_class(targets, limit_per_class)
    files = [folder.samples[i][0] for i in keep]
    images = cached_array("decoded", _decoded_key(files, image_size),
                          lambda: stack_images([np.asarray(folder.loader(f)) for f in files], image_size).numpy(),
                          max_bytes=DECODED_CACHE_BYTES)
    return torch.from_numpy(images), targets[keep], list(folder.classes)


def _decoded_key(files: list[str], image_size: int) -> str:
    """What decoding these files gives depends on: each file's path, size and modification time, the size the
    images are brought to, and the libraries that decode and resize them."""
    stats = [(f, s.st_size, s.st_mtime_ns) for f, s in ((f, os.stat(f)) for f in files)]
    return key_of({"files": stats, "image_size": int(image_size), "pillow": version("pillow"),
                   "torchvision": version("torchvision")})
