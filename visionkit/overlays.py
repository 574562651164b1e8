"""Prediction pictures: semantic maps blended, instance masks coloured, boxes with class names and
scores. Used by the validation-overlay callback and the ``predict`` command; inputs are uint8
[3,H,W] tensors, outputs too (write them with :func:`save_png`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch


def palette(num_colors: int) -> list[tuple[int, int, int]]:
    """Distinct, deterministic colours (golden-angle hues); index 0 is black (background)."""
    import colorsys

    colors = [(0, 0, 0)]
    for i in range(1, max(num_colors, 1)):
        r, g, b = colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.75, 0.95)
        colors.append((int(r * 255), int(g * 255), int(b * 255)))
    return colors[:num_colors]


def to_uint8(image: torch.Tensor, mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> torch.Tensor:  # fmt: skip
    """A float image (0..1, or normalised with ``mean``/``std``) as uint8 [3,H,W] on the CPU."""
    image = image.detach().float().cpu()
    if mean is not None and std is not None:
        image = image * torch.tensor(std).view(-1, 1, 1) + torch.tensor(mean).view(-1, 1, 1)
    if image.shape[0] == 1:
        image = image.expand(3, -1, -1)
    return (image.clamp(0, 1) * 255).round().to(torch.uint8)


def draw_semantic(image: torch.Tensor, labels: torch.Tensor, num_classes: int, alpha: float = 0.5) -> torch.Tensor:  # fmt: skip
    """Class map [H,W] (0 = background, left unpainted) blended over ``image``."""
    colors = torch.tensor(palette(num_classes + 1), dtype=torch.float32)  # +1: room for ids >= K
    lab = labels.cpu().long().clamp(0, num_classes)
    painted = colors[lab].permute(2, 0, 1)
    out = image.float()
    fg = (lab > 0) & (lab < num_classes)
    out = torch.where(fg, (1 - alpha) * out + alpha * painted, out)
    return out.round().to(torch.uint8)


def draw_detections(
    image: torch.Tensor,
    boxes: torch.Tensor,
    labels: torch.Tensor,
    scores: torch.Tensor | None,
    names: Sequence[str],
    masks: torch.Tensor | None = None,
) -> torch.Tensor:
    """Boxes (xyxy) labelled ``name score`` and, if given, masks [M,H,W] (bool or 0..1) coloured."""
    from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

    colors = palette(len(names) + 1)[1:]
    cls = [int(c) for c in labels.cpu()]
    box_colors = [colors[c % len(colors)] for c in cls]
    out = image
    if masks is not None and len(masks):
        m = masks.cpu()
        if m.ndim == 4:
            m = m[:, 0]
        out = draw_segmentation_masks(out, m > 0.5, alpha=0.5, colors=box_colors)
    if len(cls):
        text = [
            f"{names[c] if 0 <= c < len(names) else c}"
            + (f" {float(s):.2f}" if scores is not None else "")
            for c, s in zip(cls, scores.cpu() if scores is not None else cls, strict=True)
        ]
        out = draw_bounding_boxes(out, boxes.cpu().float(), labels=text, colors=box_colors, width=1)
    return out


def save_png(image: torch.Tensor, path: str | Path) -> str:
    """Write a uint8 [3,H,W] tensor as PNG (parents created); returns the path."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image.permute(1, 2, 0).contiguous().numpy()).save(path, format="PNG")
    return str(path)
