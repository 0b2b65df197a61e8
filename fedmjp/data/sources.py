"""What each data source is, known without loading it (or importing torch): scenario validation reads this."""

from __future__ import annotations

from pathlib import Path

from .disk_cache import cache_dir

# Colour photographs that load from the scikit-image wheel itself (others need pooch).
PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "motorcycle",
)

FIXED_CLASSES = {"digits": 10, "photos": len(PHOTOS), "cifar10": 10, "cifar100": 100}

# The folder torchvision's download unpacks, and each class's training images in the full set.
CIFAR_FOLDER = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
CIFAR_TRAIN_PER_CLASS = {"cifar10": 5000, "cifar100": 500}


def cifar_root(root: str | None) -> Path:
    """Where CIFAR is read: ``data.root``, else downloaded once into the cache (``$FEDMJP_CACHE_DIR/cifar``)."""
    return Path(root).expanduser() if root is not None else cache_dir() / "cifar"


def as_image_folder(root: str | None) -> bool:
    """Whether a CIFAR root holds the images as files (``train/CLASS/*``, ``test/CLASS/*``: ImageFolder's layout)
    rather than torchvision's download."""
    return root is not None and (cifar_root(root) / "train").is_dir() and (cifar_root(root) / "test").is_dir()


def on_disk(source: str, root: str | None) -> bool:
    """Whether reading this source needs no download (only CIFAR downloads: Hugging Face's cache is its own)."""
    if source not in CIFAR_FOLDER:
        return True
    return as_image_folder(root) or (cifar_root(root) / CIFAR_FOLDER[source]).is_dir()


def class_count(source: str, root: str | None) -> int | None:
    """The number of classes of a data source, or None when only loading it would tell."""
    if source in FIXED_CLASSES:
        return FIXED_CLASSES[source]
    if source == "imagefolder" and root and Path(root).expanduser().is_dir():
        directory = Path(root).expanduser()
        split = directory / "train" if (directory / "train").is_dir() else directory
        return sum(1 for entry in split.iterdir() if entry.is_dir()) or None
    return None
