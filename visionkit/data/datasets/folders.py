"""File-list datasets: class-per-folder images (classification), image + mask pairs (semantic),
and in-memory arrays (digits). Each yields ``(tv Image uint8, target)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from visionkit.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")


def list_images(folder: Path) -> tuple[list[Path], list[Path]]:
    """(image files, other files) directly or recursively under ``folder``, sorted."""
    images, others = [], []
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not p.name.startswith("."):
            (images if p.suffix.lower() in IMAGE_EXTENSIONS else others).append(p)
    return images, others


class LabelledFiles:
    """``(path, class index)`` pairs -> ``(tv Image, int)``."""

    def __init__(self, items: Sequence[tuple[Path, int]], transform: Any = None) -> None:
        self.items = list(items)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        from torchvision import tv_tensors

        from visionkit.data.images import load_image

        path, label = self.items[index]
        sample = (tv_tensors.Image(load_image(path)), label)
        return self.transform(sample) if self.transform is not None else sample


class ImageMaskPairs:
    """``(image path, mask path)`` pairs -> ``(tv Image, tv Mask int64-able uint8 [H,W])``.

    Mask pixel values are dataset class values; ``lut`` maps them to training indices (255 stays
    ignore). A value outside the class file raises DataError naming the mask file.
    """

    def __init__(self, pairs: Sequence[tuple[Path, Path]], lut: np.ndarray, transform: Any = None):
        self.pairs = list(pairs)
        self.lut = lut  # uint8 [256]; 254 marks an unknown value
        self.transform = transform

    def __len__(self) -> int:
        return len(self.pairs)

    def read_mask(self, path: Path) -> np.ndarray:
        """Class-index PNG (palette PNGs read as indices, not colours) -> training indices."""
        from PIL import Image, ImageOps

        try:
            with Image.open(path) as im:
                im = ImageOps.exif_transpose(im)
                if im.mode not in ("P", "L", "I", "I;16", "1"):
                    raise DataError(
                        f"mask {path} has mode {im.mode}; masks are single-channel class-index "
                        "PNGs (mode L or P)"
                    )
                values = np.asarray(im).astype(np.int64)
        except FileNotFoundError:
            raise DataError(f"missing mask file: {path}") from None
        except OSError as exc:
            raise DataError(f"unreadable or truncated mask {path}: {exc}") from None
        if values.min(initial=0) < 0 or values.max(initial=0) > 255:
            raise DataError(f"mask {path} has values outside 0..255")
        mapped = self.lut[values]
        if (mapped == 254).any():
            bad = sorted(set(np.unique(values[mapped == 254]).tolist()))
            raise DataError(f"mask {path} has class values {bad} not in the class file")
        return mapped

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        import torch
        from torchvision import tv_tensors

        from visionkit.data.images import load_image

        image_path, mask_path = self.pairs[index]
        image = load_image(image_path)
        mask = self.read_mask(mask_path)
        if tuple(image.shape[1:]) != mask.shape:
            raise DataError(
                f"mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} but image {image_path} is "
                f"{image.shape[2]}x{image.shape[1]}"
            )
        sample = (tv_tensors.Image(image), tv_tensors.Mask(torch.from_numpy(mask)))
        return self.transform(sample) if self.transform is not None else sample


class ArrayImages:
    """In-memory uint8 images [N,3,H,W] with int labels (digits)."""

    def __init__(self, images: Any, labels: Sequence[int], transform: Any = None) -> None:
        self.images = images
        self.labels = list(labels)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        from torchvision import tv_tensors

        sample = (tv_tensors.Image(self.images[index]), int(self.labels[index]))
        return self.transform(sample) if self.transform is not None else sample


def seeded_split(n: int, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Indices 0..n-1 shuffled with ``seed`` and cut into len(fractions)+1 parts (the first part
    takes what the fractions leave)."""
    order = np.random.default_rng(seed).permutation(n)
    sizes = [round(n * f) for f in fractions]
    parts, start = [], n - sum(sizes)
    parts.append(np.sort(order[:start]))
    for size in sizes:
        parts.append(np.sort(order[start : start + size]))
        start += size
    return parts
