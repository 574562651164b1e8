"""Typed prediction results, in the original image's pixels and with the dataset's category ids.

What ``visionkit.load(path).predict(...)`` and ``python -m visionkit predict`` return per image, for
a checkpoint and an exported file alike: :class:`Classification` (label, score),
:class:`Detections` (boxes, labels, scores[, masks]; detection and instance segmentation) and
:class:`SemanticMap` (a class per pixel). Each draws itself on the image (``draw``) and converts to
COCO results (``to_coco``). The task's LabelMap converts training indices to ids and names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from visionkit.data.labels import LabelMap


def to_original_size(pred: dict[str, Any], size: tuple[int, int], original: tuple[int, int] | None) -> dict[str, Any]:  # fmt: skip
    """Undo an evaluation resize: detections (boxes xyxy[, masks [M,1,H,W]]) at input ``size``
    -> the ``original`` (height, width) image's pixels (unchanged when None or equal)."""
    if original is None or tuple(original) == tuple(size):
        return pred
    import torch.nn.functional as F

    (h, w), (oh, ow) = size, original
    out = dict(pred)
    scale = pred["boxes"].new_tensor([ow / w, oh / h, ow / w, oh / h])
    out["boxes"] = pred["boxes"] * scale
    if "masks" in pred and len(pred["masks"]):
        out["masks"] = F.interpolate(pred["masks"].float(), size=(oh, ow), mode="bilinear", align_corners=False)  # fmt: skip
    return out


@dataclass
class Classification:
    """One image's class: ``label`` (name), ``category_id`` (dataset id), ``score``, ``probs`` [K]
    (per training index, names and ids in ``label_map``)."""

    index: int
    score: float
    probs: torch.Tensor
    label_map: LabelMap
    size: tuple[int, int]

    @property
    def label(self) -> str:
        return self.label_map.name(self.index)

    @property
    def category_id(self) -> int:
        return int(self.label_map.to_ids(self.index))

    def to_dict(self) -> dict[str, Any]:
        """``{"label", "category_id", "score"}`` (predictions.json)."""
        return {"label": self.label, "category_id": self.category_id, "score": float(self.score)}

    def draw(self, image: Any) -> torch.Tensor:
        """The image (uint8 [3,H,W]) framed and labelled ``name score``."""
        from visionkit.data.images import as_uint8_tensor
        from visionkit.overlays import draw_detections

        image = as_uint8_tensor(image)
        h, w = image.shape[-2:]
        box = torch.tensor([[0.0, 0.0, w - 1.0, h - 1.0]])
        index = torch.tensor([self.index])
        return draw_detections(image, box, index, torch.tensor([self.score]), self.label_map.names)

    def to_coco(self, image_id: int) -> list[dict[str, Any]]:
        """COCO-style classification result: ``[{"image_id", "category_id", "score"}]``."""
        return [{"image_id": int(image_id), "category_id": self.category_id, "score": round(float(self.score), 5)}]  # fmt: skip


@dataclass
class Detections:
    """One image's objects: ``boxes`` float [M,4] xyxy in the image's pixels, ``indices`` [M]
    (training index; ``labels`` gives dataset ids, ``names`` the names), ``scores`` [M] and, for
    instance segmentation, ``masks`` float [M,H,W] (probabilities; ``mask_threshold`` cuts them)."""

    boxes: torch.Tensor
    indices: torch.Tensor
    scores: torch.Tensor
    label_map: LabelMap
    size: tuple[int, int]
    masks: torch.Tensor | None = None
    score_thresh: float = 0.5
    mask_threshold: float = 0.5

    @property
    def labels(self) -> torch.Tensor:
        """Dataset category ids [M]."""
        return self.label_map.to_ids(self.indices)

    @property
    def names(self) -> list[str]:
        return [self.label_map.name(i) for i in self.indices.tolist()]

    def __len__(self) -> int:
        return len(self.scores)

    def draw(self, image: Any, score_thresh: float | None = None) -> torch.Tensor:
        """Objects scoring >= ``score_thresh`` (default: the task's overlay threshold) drawn."""
        from visionkit.data.images import as_uint8_tensor
        from visionkit.overlays import draw_detections

        keep = self.scores >= (self.score_thresh if score_thresh is None else score_thresh)
        masks = self.masks[keep] if self.masks is not None else None
        return draw_detections(as_uint8_tensor(image), self.boxes[keep], self.indices[keep], self.scores[keep], self.label_map.names, masks)  # fmt: skip

    def to_coco(self, image_id: int) -> list[dict[str, Any]]:
        """COCO detection results (xywh boxes, dataset ids, RLE masks)."""
        from visionkit.evaluation.coco_results import coco_records

        return coco_records(image_id, self.boxes, self.labels.tolist(), self.scores, self.masks, self.mask_threshold)  # fmt: skip


@dataclass
class SemanticMap:
    """One image's class per pixel: ``indices`` int64 [H,W] (training index), ``labels`` the
    dataset's ids, ``scores`` float [H,W] (probability of the chosen class)."""

    indices: torch.Tensor
    scores: torch.Tensor
    label_map: LabelMap

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.indices.shape[-2:])  # type: ignore[return-value]

    @property
    def labels(self) -> torch.Tensor:
        """Dataset category ids [H,W]."""
        return self.label_map.to_ids(self.indices)

    def draw(self, image: Any) -> torch.Tensor:
        """The classes blended over the image (index 0, background, left unpainted)."""
        from visionkit.data.images import as_uint8_tensor
        from visionkit.overlays import draw_semantic

        return draw_semantic(as_uint8_tensor(image), self.indices, self.label_map.num_classes)

    def to_coco(self, image_id: int) -> list[dict[str, Any]]:
        """COCO stuff-segmentation results: one RLE per class present."""
        from visionkit.evaluation.coco_results import encode_mask

        out = []
        for index in torch.unique(self.indices).tolist():
            mask = (self.indices == index).numpy()
            out.append({"image_id": int(image_id), "category_id": int(self.label_map.to_ids(index)), "segmentation": encode_mask(mask)})  # fmt: skip
        return out


Result = Classification | Detections | SemanticMap
