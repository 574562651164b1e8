"""``python -m visionkit browse data=... split=train n=16``: look at what the model will see.

Draws ``n`` samples of ``split`` after that split's transforms (train: augmented) with boxes, class
names and masks, as one PNG grid ``browse_<split>.png`` in the run directory.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from visionkit.errors import ConfigError


def to_uint8(image: Any, dm: Any) -> Any:
    """A batch-ready image back to uint8 [3,H,W]: de-normalised unless the task keeps 0..1."""
    from visionkit.overlays import to_uint8 as image_to_uint8

    keeps_01 = dm.task in ("detection", "instance_segmentation")
    return image_to_uint8(image, *((None, None) if keeps_01 else (dm.mean, dm.std)))


def draw_sample(image: Any, target: Any, dm: Any, min_tile: int = 128) -> Any:
    """One sample as a PIL image with its annotations drawn."""
    import torch
    from PIL import Image, ImageDraw
    from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

    from visionkit.overlays import palette

    names = dm.class_names
    img = to_uint8(image, dm)
    colors = palette(len(names) + 1)  # as the prediction pictures: [0] background, class c at c+1
    caption = ""
    if dm.task == "classification":
        t = torch.as_tensor(target)
        if t.ndim == 0:
            caption = names[int(t)]
        else:  # soft or multi-hot targets: the classes with weight
            caption = ", ".join(f"{names[i]}:{float(t[i]):.2f}" for i in torch.nonzero(t > 0.01).flatten())  # fmt: skip
    elif dm.task == "semantic_segmentation":
        mask = torch.as_tensor(target)
        present = [int(v) for v in mask.unique() if int(v) != 255 and int(v) != 0]
        if present:
            masks = torch.stack([mask == v for v in present])
            img = draw_segmentation_masks(
                img, masks, alpha=0.5, colors=[colors[v % len(colors)] for v in present]
            )
        caption = ", ".join(names[v] for v in present)
    else:
        labels = target["labels"].tolist()
        box_colors = [colors[1 + c % len(names)] for c in labels]
        if "masks" in target and len(labels):
            img = draw_segmentation_masks(img, target["masks"].bool(), alpha=0.45,
                                          colors=box_colors)  # fmt: skip
    h, w = img.shape[1:]
    scale = max(1, math.ceil(min_tile / max(h, w)))
    pil = Image.fromarray(img.permute(1, 2, 0).numpy())
    if scale > 1:
        pil = pil.resize((w * scale, h * scale), Image.NEAREST)
    if dm.task in ("detection", "instance_segmentation"):
        boxes = target["boxes"] * scale
        labels = target["labels"].tolist()
        arr = torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1)
        arr = draw_bounding_boxes(arr, boxes, labels=[names[c] for c in labels],
                                  colors=box_colors, width=2)  # fmt: skip
        pil = Image.fromarray(arr.permute(1, 2, 0).numpy())
        removed = int(target.get("removed", 0))
        caption = f"{len(labels)} objects" + (f", {removed} removed" if removed else "")
    if caption:
        draw = ImageDraw.Draw(pil)
        draw.rectangle((0, 0, pil.width, 12), fill=(0, 0, 0))
        draw.text((2, 0), caption[:60], fill=(255, 255, 255))
    return pil


def grid(tiles: list[Any], pad: int = 4) -> Any:
    """Tiles (PIL) in a near-square grid on a dark background."""
    from PIL import Image

    cols = math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / cols)
    tw = max(t.width for t in tiles)
    th = max(t.height for t in tiles)
    out = Image.new("RGB", (cols * (tw + pad) + pad, rows * (th + pad) + pad), (32, 32, 32))
    for i, tile in enumerate(tiles):
        out.paste(tile, (pad + (i % cols) * (tw + pad), pad + (i // cols) * (th + pad)))
    return out


def check_request(split: str, n: int) -> None:
    """``split`` and ``n`` as browse takes them (ConfigError); ``run`` checks them before the
    datamodule, and torch with it, is imported."""
    if n < 1:
        raise ConfigError(f"n must be >= 1, got {n}")
    if split not in ("train", "val", "test"):
        raise ConfigError(f"split must be train, val or test, got '{split}'")


def browse(dm: Any, split: str, n: int, out_dir: Path, seed: int = 0, min_tile: int = 128) -> Path:
    """Write the grid for ``n`` random samples of ``split`` (checked: ``check_request``);
    returns the PNG path."""
    if not dm.has_split(split):
        raise ConfigError(f"the data has no '{split}' split")
    dataset = dm.datasets[split]
    rng = np.random.default_rng(seed)
    indices = rng.choice(len(dataset), size=min(n, len(dataset)), replace=False)
    samples = [dataset[int(i)] for i in indices]
    if split == "train" and dm.task == "classification":  # show MixUp/CutMix as trained
        images, targets = dm.collate(train=True)(samples)
        samples = list(zip(images, targets, strict=True))
    tiles = [draw_sample(img, tgt, dm, min_tile) for img, tgt in samples]
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"browse_{split}.png"
    grid(tiles).save(path)
    return path


def run(cfg: DictConfig) -> str:
    """Hydra entry point: build the configured datamodule and write the grid."""
    from visionkit import runner

    check_request(str(cfg.split), int(cfg.n))
    out = runner.setup(cfg)
    dm = runner.build_datamodule(cfg)
    path = browse(dm, str(cfg.split), int(cfg.n), out, int(cfg.seed), int(cfg.get("min_tile", 128)))
    print(f"browse: {path}")
    return str(path)
