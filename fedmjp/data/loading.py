"""``load_dataset``: one entry point for every data source a scenario can name."""

from __future__ import annotations

from collections.abc import Callable

from fedmjp.data.arrays import ImageArrayDataset
from fedmjp.data.builtin import PhotoCrops, load_digits, load_photos
from fedmjp.data.torchvision_sets import load_cifar10, load_cifar100, load_imagefolder

SPLITS = ("train", "test")
# Images stored whole, or (photos) cut when read: both serve (image, label) and have targets and classes.
ImageSet = ImageArrayDataset | PhotoCrops


def load_huggingface(*args, **kwargs) -> ImageArrayDataset:
    """Imported on use: only this source needs Hugging Face ``datasets``, which costs a process 0.4 s."""
    from fedmjp.data.huggingface import load_huggingface as load

    return load(*args, **kwargs)


LOADERS: dict[str, Callable[..., ImageSet]] = {
    "digits": load_digits,
    "photos": load_photos,
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
    "imagefolder": load_imagefolder,
    "huggingface": load_huggingface,
}


def load_dataset(
    source: str,
    split: str,
    image_size: int,
    *,
    root: str | None = None,
    name: str | None = None,
    seed: int = 0,
    limit_per_class: int | None = None,
    crops_per_photo: int | None = None,
) -> ImageSet:
    """A data set of ``(image, label)``: float32 (3, S, S) in [0, 1] and an int.

    Parameters
    ----------
    source : "digits", "photos" (offline, built in), "cifar10", "cifar100",
        "imagefolder" or "huggingface".
    split : "train" or "test".
    image_size : side S of the square images returned.
    root : data directory (CIFAR download/cache dir, ImageFolder root, or a
        Hugging Face builder's ``data_dir``).
    name : Hugging Face data set name or builder (source "huggingface" only).
    seed : seed of the train/test split where the source has none, and of the photo crops.
    limit_per_class : keep only the first that many items of each class (quick runs).
    crops_per_photo : "photos" only: crops drawn per photo (default 100).

    Raises
    ------
    ValueError : one line naming the bad field, e.g. "data.root: /x does not exist".
    """
    if source not in LOADERS:
        raise ValueError(f"data.source: unknown {source!r} (choose from {', '.join(LOADERS)})")
    if split not in SPLITS:
        raise ValueError(f"data.split: unknown {split!r} (choose from {', '.join(SPLITS)})")
    if not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"data.image_size: must be a positive integer, got {image_size!r}")
    if limit_per_class is not None and (not isinstance(limit_per_class, int) or limit_per_class < 1):
        raise ValueError(f"data.limit_per_class: must be a positive integer, got {limit_per_class!r}")
    extra = {"crops_per_photo": crops_per_photo} if source == "photos" and crops_per_photo else {}
    return LOADERS[source](
        split, image_size, root=root, name=name, seed=seed, limit_per_class=limit_per_class, **extra
    )
