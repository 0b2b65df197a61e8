"""What each data source is, known without loading it (or importing torch): scenario validation reads this."""

from __future__ import annotations

from pathlib import Path

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


def class_count(source: str, root: str | None) -> int | None:
    """The number of classes of a data source, or None when only loading it would tell."""
    if source in FIXED_CLASSES:
        return FIXED_CLASSES[source]
    if source == "imagefolder" and root and Path(root).expanduser().is_dir():
        directory = Path(root).expanduser()
        split = directory / "train" if (directory / "train").is_dir() else directory
        return sum(1 for entry in split.iterdir() if entry.is_dir()) or None
    return None
