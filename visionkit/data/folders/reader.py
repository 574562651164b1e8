"""File-list datasets: class-per-folder images (classification), image + mask pairs (semantic),
and in-memory arrays (digits). Each yields ``(tv Image uint8, target)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from visionkit.data.validation import LOADING_HINT
from visionkit.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")


def list_images(folder: Path) -> tuple[list[Path], list[Path]]:
    """(image files, other files) directly or recursively under ``folder``, sorted; a dangling
    link counts as a file (its check reports it missing, instead of it vanishing)."""
    images, others = [], []
    for p in sorted(folder.rglob("*")):
        if (p.is_file() or (p.is_symlink() and not p.exists())) and not p.name.startswith("."):
            (images if p.suffix.lower() in IMAGE_EXTENSIONS else others).append(p)
    return images, others


class LabelledFiles:
    """``(path, class index)`` pairs -> ``(tv Image, int)``."""

    def __init__(
        self,
        items: Sequence[tuple[Path, int]],
        transform: Any = None,
        max_pixels: int | None = None,
    ) -> None:
        self.items = list(items)
        self.transform = transform
        self.max_pixels = max_pixels  # decompression-bomb limit, applied in loader workers too

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        from torchvision import tv_tensors

        from visionkit.data.images import load_image

        path, label = self.items[index]
        try:
            sample = (tv_tensors.Image(load_image(path, self.max_pixels)), label)
        except DataError as exc:
            raise DataError(f"{exc} ({LOADING_HINT})") from None
        return self.transform(sample) if self.transform is not None else sample


MASK_MODES = ("P", "L", "I", "I;16", "1")


class MaskValueError(DataError):
    """A mask whose pixel values are not in the class file (or outside 0..255)."""


def open_mask(path: Path, max_pixels: int | None = None) -> Any:
    """Open a class-index mask lazily (header): DataError when missing, unreadable or not a
    single-channel image. The caller closes it."""
    from visionkit.data.images import open_image

    if not Path(path).is_file():
        raise DataError(f"missing mask file: {path}")
    im = open_image(path, max_pixels)
    if im.mode not in MASK_MODES:
        im.close()
        raise DataError(
            f"mask {path} has mode {im.mode}; masks are single-channel class-index PNGs "
            "(mode L or P)"
        )
    return im


def read_mask(path: Path, lut: np.ndarray, max_pixels: int | None = None) -> np.ndarray:
    """Class-index PNG (palette PNGs read as indices, not colours) -> training indices via
    ``lut``; values outside the class file raise DataError naming the mask and the values."""
    from PIL import ImageOps

    with open_mask(path, max_pixels) as im:
        try:
            values = np.asarray(ImageOps.exif_transpose(im)).astype(np.int64)
        except (OSError, SyntaxError, ValueError) as exc:
            raise DataError(f"unreadable or truncated mask {path}: {exc}") from None
    if values.min(initial=0) < 0 or values.max(initial=0) > 255:
        raise MaskValueError(f"mask {path} has values outside 0..255")
    mapped = lut[values]
    if (mapped == 254).any():
        bad = sorted(set(np.unique(values[mapped == 254]).tolist()))
        raise MaskValueError(f"mask {path} has class values {bad} not in the class file")
    return mapped


class ImageMaskPairs:
    """``(image path, mask path)`` pairs -> ``(tv Image, tv Mask int64-able uint8 [H,W])``.

    Mask pixel values are dataset class values; ``lut`` maps them to training indices (255 stays
    ignore). A value outside the class file raises DataError naming the mask file.
    """

    def __init__(
        self,
        pairs: Sequence[tuple[Path, Path]],
        lut: np.ndarray,
        transform: Any = None,
        max_pixels: int | None = None,
    ):
        self.pairs = list(pairs)
        self.lut = lut  # uint8 [256]; 254 marks an unknown value
        self.transform = transform
        self.max_pixels = max_pixels  # decompression-bomb limit, applied in loader workers too

    def __len__(self) -> int:
        return len(self.pairs)

    def read_mask(self, path: Path) -> np.ndarray:
        """The mask at ``path`` as training indices (see :func:`read_mask`)."""
        return read_mask(path, self.lut, self.max_pixels)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        import torch
        from torchvision import tv_tensors

        from visionkit.data.images import load_image

        image_path, mask_path = self.pairs[index]
        try:
            image = load_image(image_path, self.max_pixels)
            mask = self.read_mask(mask_path)
        except DataError as exc:
            raise DataError(f"{exc} ({LOADING_HINT})") from None
        if tuple(image.shape[1:]) != mask.shape:
            raise DataError(
                f"mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} but image {image_path} is "
                f"{image.shape[2]}x{image.shape[1]} ({LOADING_HINT})"
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
