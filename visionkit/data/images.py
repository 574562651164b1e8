"""Decoding images once into RGB uint8 tensors, whatever the file: EXIF orientation applied,
grayscale / RGBA / palette / 16-bit converted. Errors name the file.
"""

from __future__ import annotations

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


def open_rgb(path: str | Path) -> Image.Image:
    """Open and fully decode ``path`` as RGB; unreadable or truncated files raise DataError."""
    try:
        with Image.open(path) as im:
            im.load()
            return to_rgb(im)
    except FileNotFoundError:
        raise DataError(f"missing image file: {path}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"unreadable or truncated image {path}: {exc}") from None


def load_image(path: str | Path) -> Any:
    """``path`` -> torch uint8 tensor [3,H,W] (RGB)."""
    import torch

    arr = np.asarray(open_rgb(path))
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
