"""Image classification data sets from the Hugging Face hub (or a local builder)."""

from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np

from fedmjp.data.arrays import ImageArrayDataset, first_per_class, stack_images

# Preferred label columns when a data set has several (CIFAR-100 has fine and coarse).
LABEL_COLUMNS = ("label", "labels", "fine_label")


def load_huggingface(
    split: str, image_size: int, *, root: str | None, name: str | None, seed: int, limit_per_class: int | None
) -> ImageArrayDataset:
    """``name`` is a hub data set ("uoft-cs/cifar10") or a builder ("imagefolder");
    ``root``, when given, is its ``data_dir``."""
    if not name:
        raise ValueError("data.name: required for source 'huggingface' (e.g. 'uoft-cs/cifar10')")
    if root is not None and not Path(root).expanduser().exists():
        raise ValueError(f"data.root: {root} does not exist")
    data_dir = str(Path(root).expanduser()) if root is not None else None
    try:
        table = datasets.load_dataset(name, split=split, data_dir=data_dir)
    except (OSError, ValueError) as error:  # not found, offline, unknown split
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"data.name: cannot load {name!r} split {split!r}: {first_line}") from error
    image_column = _image_column(table.features, name)
    label_column, classes = _label_column(table, name)
    targets = np.asarray(table.with_format("numpy")[label_column], dtype=np.int64)
    keep = first_per_class(targets, limit_per_class)
    table = table.select(keep).cast_column(image_column, datasets.Image(mode="RGB"))
    images = stack_images([np.asarray(image) for image in table[image_column]], image_size)
    return ImageArrayDataset(images, targets[keep], classes, image_size)


def _image_column(features: datasets.Features, name: str) -> str:
    for column, feature in features.items():
        if isinstance(feature, datasets.Image):
            return column
    raise ValueError(f"data.name: {name!r} has no image column (columns: {', '.join(features)})")


def _label_column(table: datasets.Dataset, name: str) -> tuple[str, list[str]]:
    """The label column and its class names (from ClassLabel, else the label values)."""
    class_labels = [c for c, f in table.features.items() if isinstance(f, datasets.ClassLabel)]
    preferred = [c for c in LABEL_COLUMNS if c in table.features]
    candidates = [c for c in preferred if c in class_labels] + class_labels
    if candidates:
        return candidates[0], list(table.features[candidates[0]].names)
    for column in preferred:
        values = np.asarray(table.with_format("numpy")[column])
        if np.issubdtype(values.dtype, np.integer) and values.min() >= 0:
            return column, [str(v) for v in range(int(values.max()) + 1)]
    raise ValueError(f"data.name: {name!r} has no integer label column (columns: {', '.join(table.features)})")
