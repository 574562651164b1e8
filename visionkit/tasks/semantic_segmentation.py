"""Semantic segmentation: backbone -> [neck] -> head logits resized to the image; cross-entropy
with the ignore index (Dice optional); mIoU (torchmetrics JaccardIndex), pixel accuracy and
per-class IoU (results.json)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassJaccardIndex,
)

from visionkit.data.labels import IGNORE_INDEX, LabelMap
from visionkit.predictions import SemanticMap
from visionkit.tasks.base import BaseTask, build_criterion


def iou_from_confusion(matrix: torch.Tensor) -> torch.Tensor:
    """Per-class IoU = TP / (TP + FP + FN) from a confusion matrix (rows true); NaN where the
    class is in neither prediction nor target."""
    matrix = matrix.double()
    tp = matrix.diag()
    union = matrix.sum(0) + matrix.sum(1) - tp
    return torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))


class SemanticSegmentationTask(BaseTask):
    """Batches ``(images [N,3,H,W] normalised, masks int64 [N,H,W])``; 255 = ignore.

    ``loss``: LOSSES spec built with ``ignore_index`` (``cross_entropy``, ``dice``, ``ce_dice``).
    """

    task_name = "semantic_segmentation"
    dense_logits = True

    def __init__(
        self, *args: Any, loss: Any = "cross_entropy", class_weights: Any = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, loss=loss, class_weights=class_weights, **kwargs)
        self.criterion = build_criterion(
            loss, class_weights, self.num_classes, ignore_index=IGNORE_INDEX
        )
        k = self.num_classes
        metrics = MetricCollection(
            {
                "mIoU": MulticlassJaccardIndex(k, average="macro", ignore_index=IGNORE_INDEX),
                "pixel_acc": MulticlassAccuracy(k, average="micro", ignore_index=IGNORE_INDEX),
            }
        )
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")
        self.confusion = MulticlassConfusionMatrix(k, ignore_index=IGNORE_INDEX)
        self.last_iou: dict[str, torch.Tensor] = {}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits [N,K,H,W] at the input's size."""
        logits = self.head(self.features(images))
        if logits.shape[-2:] != images.shape[-2:]:
            logits = F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)  # fmt: skip
        return logits

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:  # fmt: skip
        images, masks = batch
        loss = self.criterion(self(images), masks)
        self.log("train/loss", loss, prog_bar=True, batch_size=images.shape[0])
        return loss

    def metric_inputs(self, logits: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """The class per pixel and the masks."""
        return logits.argmax(dim=1), masks

    def on_validation_epoch_start(self) -> None:
        self.confusion.reset()

    on_test_epoch_start = on_validation_epoch_start

    def on_validation_epoch_end(self) -> None:
        self.last_iou["val"] = iou_from_confusion(self.confusion.compute().cpu())

    def on_test_epoch_end(self) -> None:
        self.test_confusion = self.confusion.compute().cpu()
        self.last_iou["test"] = iou_from_confusion(self.test_confusion)

    def error_analysis(self, output_dir: str, **options: Any) -> tuple[dict[str, Any], list[str]]:
        """After test: per-class IoU bars and the pixel confusion matrix (the matrix the test
        metrics come from), as PNGs; the matrix (rows true) and its class names under
        ``test/pixel_confusion``."""
        from visionkit.evaluation.error_analysis import analyse_semantic

        matrix = getattr(self, "test_confusion", None)
        if matrix is None or matrix.sum() == 0:
            return {}, []
        figures = analyse_semantic(matrix.numpy(), self.class_names, output_dir)
        return {
            "test/pixel_confusion": {"labels": self.class_names, "matrix": matrix.tolist()}
        }, figures

    def extra_results(self, stage: str) -> dict[str, Any]:
        """``<stage>/per_class_iou``: {class name: IoU or null when the class never appeared}."""
        results = super().extra_results(stage)
        iou = self.last_iou.get(stage)
        if iou is None:
            return results
        values = {
            name: (None if torch.isnan(v) else float(v))
            for name, v in zip(self.class_names, iou, strict=True)
        }
        return {**results, f"{stage}/per_class_iou": values}

    # -- prediction --------------------------------------------------------------------------
    @classmethod
    def decode(cls, outputs: list[torch.Tensor], sizes: list[tuple[int, int]], label_map: LabelMap, options: Mapping[str, Any]) -> list[SemanticMap]:  # fmt: skip
        """Logits [K,h,w] per image, resized to the original size -> class and score per pixel."""
        results = []
        for logits, size in zip(outputs, sizes, strict=True):
            logits = torch.as_tensor(logits).float().cpu()[None]
            if tuple(logits.shape[-2:]) != tuple(size):
                logits = F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)  # fmt: skip
            scores, indices = logits[0].softmax(dim=0).max(dim=0)
            results.append(SemanticMap(indices, scores, label_map))
        return results

    def overlays(self, batch: Any, max_images: int, mean: Sequence[float], std: Sequence[float]) -> list[torch.Tensor]:  # fmt: skip
        """Predicted class maps blended over the first ``max_images`` images of a batch."""
        from visionkit.overlays import draw_semantic, to_uint8

        images = batch[0][:max_images]
        with torch.no_grad():
            labels = self(images).argmax(dim=1)
        return [
            draw_semantic(to_uint8(img, mean, std), lab, self.num_classes)
            for img, lab in zip(images, labels, strict=True)
        ]
