"""``digits``: scikit-learn's real handwritten digits (1797 8x8 images, 0..16 grey levels),
upsampled to ``image_size`` and cut into seeded train/val/test splits (classification only)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from visionkit.data.datamodule import SPLITS, VisionDataModule
from visionkit.data.folders.reader import ArrayImages, seeded_split
from visionkit.data.labels import LabelMap
from visionkit.errors import ConfigError


class DigitsDataModule(VisionDataModule):
    """Handwritten digits 0-9 held in memory; no files, nothing to download."""

    FORMAT = "digits"
    SUPPORTED_TASKS = ("classification",)

    def __init__(self, image_size: int = 32, val_fraction: float = 0.15, test_fraction: float = 0.15,
                 mean: Any = (0.5, 0.5, 0.5), std: Any = (0.5, 0.5, 0.5), **kwargs: Any):  # fmt: skip
        super().__init__(image_size=image_size, mean=mean, std=std, **kwargs)
        if not (
            0 < val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1
        ):
            raise ConfigError("data.val_fraction must be in (0, 1) and val + test < 1")
        self.val_fraction = float(val_fraction)
        self.test_fraction = float(test_fraction)

    def default_transforms(self, train: bool) -> list[Any]:
        size = [self.image_size, self.image_size]
        steps: list[Any] = [{"name": "resize", "size": size, "antialias": True}]
        # digits are not mirror-symmetric: a small affine jitter instead of flips
        jitter = {"name": "affine", "degrees": 10, "translate": [0.1, 0.1], "scale": [0.9, 1.1]}
        return [jitter, *steps] if train else steps

    def build_splits(self) -> tuple[LabelMap, dict[str, Any]]:
        from sklearn.datasets import load_digits

        digits = load_digits()
        grey = np.clip(digits.images * (255.0 / 16.0) + 0.5, 0, 255).astype(np.uint8)
        images = torch.from_numpy(grey).unsqueeze(1).expand(-1, 3, -1, -1).contiguous()
        images = torch.nn.functional.interpolate(
            images.float(), size=(self.image_size, self.image_size), mode="bilinear",
            align_corners=False,
        ).round().clamp(0, 255).to(torch.uint8)  # fmt: skip
        labels = digits.target.astype(int)
        parts = seeded_split(len(labels), [self.val_fraction, self.test_fraction], self.seed)
        datasets = {
            split: ArrayImages(images[torch.as_tensor(part)], labels[part].tolist())
            for split, part in zip(SPLITS, parts, strict=True)
            if len(part)
        }
        return LabelMap([str(d) for d in range(10)]), datasets
