"""Decoding images once into RGB uint8 tensors, whatever the file: EXIF orientation applied,
grayscale / RGBA / palette / 16-bit converted. Errors name the file.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from visionkit.errors import DataError


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL image -> RGB: EXIF orientation applied, alpha composited on black, 16-bit rescaled."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
    if image.mode == "F":
        arr = np.asarray(image, dtype=np.float64)
        lo, hi = float(arr.min(initial=0)), float(arr.max(initial=1))
        arr = (arr - lo) / max(hi - lo, 1e-12) * 255.0
        return Image.fromarray(arr.astype(np.uint8), mode="L").convert("RGB")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB") if image.mode != "RGB" else image


# PIL's decompression-bomb limit as shipped (89.5 M pixels); ``data.max_image_pixels`` changes it
DEFAULT_MAX_PIXELS: int = Image.MAX_IMAGE_PIXELS or 89_478_485
PIXEL_LIMIT_KEY = "data.max_image_pixels"


def set_pixel_limit(max_pixels: int | None) -> int:
    """Set PIL's decompression-bomb limit for this process (None: PIL's default); returns it.

    Called in the main process and, through the datasets, in every loader worker. Images above
    the limit raise DataError naming the config key, so PIL's own warning is silenced here."""
    limit = DEFAULT_MAX_PIXELS if max_pixels is None else int(max_pixels)
    if limit != Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = limit
        warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    return limit


class ImageTooLargeError(DataError):
    """An image above the decompression-bomb limit (config key ``data.max_image_pixels``)."""


def _too_large(path: str | Path, detail: str) -> DataError:
    return ImageTooLargeError(
        f"image {path} {detail}, more than the decompression-bomb limit of "
        f"{Image.MAX_IMAGE_PIXELS} pixels; raise the limit with {PIXEL_LIMIT_KEY}=N"
    )


def open_image(path: str | Path, max_pixels: int | None = None) -> Image.Image:
    """Open ``path`` lazily (header only): DataError when missing, unreadable or above the pixel
    limit (``max_pixels``, else the process's limit). The caller closes it."""
    if max_pixels is not None:
        set_pixel_limit(max_pixels)
    try:
        im = Image.open(path)
    except FileNotFoundError:
        raise DataError(f"missing image file: {path}") from None
    except Image.DecompressionBombError as exc:  # PIL's own check, at twice the limit
        found = re.search(r"\((\d+) pixels\)", str(exc))
        raise _too_large(path, f"has {found[1] if found else 'too many'} pixels") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        if Path(path).is_file() and Path(path).stat().st_size == 0:
            raise DataError(f"empty image file: {path}") from None
        raise DataError(f"unreadable image {path}: {exc}") from None
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and im.width * im.height > limit:
        im.close()
        raise _too_large(path, f"has {im.width * im.height} pixels ({im.width}x{im.height})")
    return im


def oriented_size(im: Image.Image, decoded: bool = False) -> tuple[int, int]:
    """(width, height) after the EXIF orientation that :func:`to_rgb` applies. Undecoded, a PNG's
    EXIF is read only when it precedes the pixels (PIL would decode the image to find a later one)."""
    if im.format == "PNG" and "exif" not in im.info and not decoded:
        return im.width, im.height
    orientation = im.getexif().get(0x0112, 1)
    return (im.height, im.width) if orientation in (5, 6, 7, 8) else (im.width, im.height)


def open_rgb(path: str | Path, max_pixels: int | None = None) -> Image.Image:
    """Open and fully decode ``path`` as RGB; unreadable or truncated files raise DataError."""
    with open_image(path, max_pixels) as im:
        try:
            im.load()
        except (OSError, SyntaxError, ValueError) as exc:
            raise DataError(f"unreadable or truncated image {path}: {exc}") from None
        return to_rgb(im)


def load_image(path: str | Path, max_pixels: int | None = None) -> Any:
    """``path`` -> torch uint8 tensor [3,H,W] (RGB)."""
    import torch

    arr = np.asarray(open_rgb(path, max_pixels))
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def as_uint8_tensor(image: Any) -> Any:
    """A user's picture (PIL, path, ndarray HxW[xC], tensor [C,H,W]) -> uint8 RGB tensor [3,H,W]."""
    import torch

    if isinstance(image, str | Path):
        return load_image(image)
    if isinstance(image, Image.Image):
        return torch.from_numpy(np.ascontiguousarray(np.asarray(to_rgb(image)).transpose(2, 0, 1)))
    if isinstance(image, np.ndarray):
        arr = image
        if arr.ndim == 3 and arr.shape[2] in (1, 3, 4):
            arr = arr.transpose(2, 0, 1)
        image = torch.from_numpy(np.ascontiguousarray(arr))
    if not isinstance(image, torch.Tensor):
        raise DataError(f"cannot read an image from {type(image).__name__}")
    t = image if image.ndim == 3 else image.unsqueeze(0)
    if t.ndim != 3:
        raise DataError(f"expected an image [C,H,W] or [H,W], got shape {tuple(image.shape)}")
    if t.dtype.is_floating_point:
        t = (t.clamp(0, 1) * 255 + 0.5).to(torch.uint8)
    elif t.dtype == torch.uint16 or (t.dtype in (torch.int32, torch.int64) and int(t.max()) > 255):
        t = (t.to(torch.float64) / 65535.0 * 255 + 0.5).clamp(0, 255).to(torch.uint8)
    else:
        t = t.to(torch.uint8)
    if t.shape[0] == 1:
        t = t.expand(3, -1, -1)
    elif t.shape[0] == 4:
        t = (t[:3].float() * (t[3:].float() / 255)).round().to(torch.uint8)
    elif t.shape[0] != 3:
        raise DataError(f"expected 1, 3 or 4 channels, got {t.shape[0]}")
    return t.contiguous()
