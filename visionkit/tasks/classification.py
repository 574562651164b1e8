"""Image classification: backbone -> head logits; cross-entropy; accuracy, macro F1, confusion matrix."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
)

from visionkit.data.labels import LabelMap
from visionkit.predictions import Classification
from visionkit.tasks.base import BaseTask, build_criterion


class ClassificationTask(BaseTask):
    """Batches are ``(images [N,3,H,W], targets)``: int64 [N] indices or float [N,K] soft targets."""

    task_name = "classification"

    def __init__(
        self,
        *args: Any,
        loss: Any = "cross_entropy",
        label_smoothing: float = 0.0,
        class_weights: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            *args, loss=loss, label_smoothing=label_smoothing, class_weights=class_weights, **kwargs
        )
        self.criterion = build_criterion(
            loss, class_weights, self.num_classes, label_smoothing=label_smoothing
        )
        k = self.num_classes
        metrics = MetricCollection(
            {
                "acc": MulticlassAccuracy(k, average="micro"),
                "f1": MulticlassF1Score(k, average="macro"),
            }
        )
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")
        self.confusion = MulticlassConfusionMatrix(k)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        images, targets = batch
        loss = self.criterion(self(images), targets)
        self.log("train/loss", loss, prog_bar=True, batch_size=images.shape[0])
        return loss

    def metric_inputs(self, logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """Logits and class indices (soft targets [N,K]: their most likely class)."""
        return logits, (targets.argmax(dim=1) if targets.ndim == 2 else targets)

    def on_validation_epoch_start(self) -> None:
        self.confusion.reset()

    def on_validation_epoch_end(self) -> None:
        # computed on every rank (it syncs across processes); only rank zero draws it
        self.last_confusion = self.confusion.compute().cpu()

    on_test_epoch_start = on_validation_epoch_start
    on_test_epoch_end = on_validation_epoch_end

    @classmethod
    def decode(cls, outputs: list[torch.Tensor], sizes: list[tuple[int, int]], label_map: LabelMap, options: Mapping[str, Any]) -> list[Classification]:  # fmt: skip
        """Logits [K] per image -> the most probable class and its probability."""
        results = []
        for logits, size in zip(outputs, sizes, strict=True):
            probs = torch.as_tensor(logits).float().cpu().softmax(dim=0)
            score, index = probs.max(dim=0)
            results.append(Classification(int(index), float(score), probs, label_map, tuple(size)))
        return results

    def save_figures(self, stage: str, output_dir: str) -> list[str]:
        """The confusion matrix of the last validation/test epoch as ``confusion_matrix_<stage>.png``."""
        matrix = getattr(self, "last_confusion", None)
        if matrix is None or matrix.sum() == 0:
            return []
        path = Path(output_dir) / f"confusion_matrix_{stage}.png"
        plot_confusion_matrix(matrix, self.class_names, path)
        return [str(path)]


def plot_confusion_matrix(matrix: torch.Tensor, names: list[str], path: Path) -> None:
    """Row-normalised confusion matrix with counts, true classes on rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = matrix.numpy()
    rates = counts / counts.sum(axis=1, keepdims=True).clip(min=1)
    size = max(4.0, 0.5 * len(names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(names)):
        for j in range(len(names)):
            color = "white" if rates[i, j] > 0.5 else "black"
            ax.text(j, i, int(counts[i, j]), ha="center", va="center", color=color, fontsize=8)
    ax.set_title(f"confusion matrix (accuracy {counts.trace() / max(counts.sum(), 1):.3f})")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
