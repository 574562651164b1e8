"""``retinanet``: torchvision's RetinaNet (focal loss, dense anchors) on the task's features."""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import nn
from torchvision.models.detection import RetinaNet
from torchvision.models.detection.retinanet import RetinaNetHead as TVRetinaNetHead

from visionkit.errors import ConfigError
from visionkit.models.backbones.base import FeatureInfo
from visionkit.models.heads.detector_base import (
    DetectorHead,
    DetectorOptions,
    anchor_labels,
    class_weighted_focal_loss,
)

BOX_LOSSES = ("l1", "smooth_l1", "giou", "ciou", "diou")  # torchvision's regression losses


class _WeightedRetinaNetHead(TVRetinaNetHead):
    """torchvision's RetinaNet head whose classification focal loss, once ``class_weight`` (per
    detector class, background column first) is set, weights each foreground anchor by its class
    (:func:`class_weighted_focal_loss`), still summed per image over the non-ignored anchors and
    divided by the image's foreground anchors, then averaged over images, as torchvision does."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.register_buffer("class_weight", None, persistent=False)

    def compute_loss(self, targets: list[dict[str, torch.Tensor]], head_outputs: dict[str, torch.Tensor], anchors: list[torch.Tensor], matched_idxs: list[torch.Tensor]) -> dict[str, torch.Tensor]:  # fmt: skip
        if self.class_weight is None:
            return super().compute_loss(targets, head_outputs, anchors, matched_idxs)
        per_image = []
        for target, logits, matched in zip(targets, head_outputs["cls_logits"], matched_idxs, strict=True):  # fmt: skip
            labels = anchor_labels(target["labels"], matched)
            loss = class_weighted_focal_loss(logits, labels, self.class_weight)
            per_image.append(loss / max(1, int((matched >= 0).sum())))
        box = self.regression_head.compute_loss(targets, head_outputs, anchors, matched_idxs)
        return {
            "classification": torch.stack(per_image).sum() / len(targets),
            "bbox_regression": box,
        }


class RetinaNetHead(DetectorHead):
    """Anchors per level (``anchor_sizes`` or ``anchor_scale * reduction`` times 2^0, 2^1/3,
    2^2/3), ``min_size``/``max_size``, ``score_thresh``, ``detections_per_img`` are config keys;
    ``head_norm`` (``gn``: GroupNorm(32) in the head convs) and ``box_loss`` (``giou``) give
    torchvision's _v2 layout. ``task.class_weights`` weight the focal loss per class.
    """

    takes_class_weights = True

    def __init__(
        self,
        feature_info: list[FeatureInfo],
        num_classes: int,
        head_norm: str | None = None,
        box_loss: str = "l1",
        **options: Any,
    ) -> None:
        common = DetectorOptions.pop(options)  # what stays is RetinaNet's own keywords
        super().__init__("retinanet", RetinaNet, feature_info, options)
        if head_norm not in (None, "gn") or box_loss not in BOX_LOSSES:
            raise ConfigError(f"retinanet: head_norm must be null or gn and box_loss one of {', '.join(BOX_LOSSES)}; got {head_norm}, {box_loss} (model.head)")  # fmt: skip
        anchors = common.anchors(feature_info, "retinanet", octaves=3)  # 2^0, 2^1/3, 2^2/3
        norm = partial(nn.GroupNorm, 32) if head_norm == "gn" else None
        head = _WeightedRetinaNetHead(
            self.channels, anchors.num_anchors_per_location()[0], num_classes + 1, norm_layer=norm
        )
        head.regression_head._loss_type = box_loss  # torchvision's own switch (it has no argument)
        self.detector = RetinaNet(
            self.adapter, num_classes + 1, anchor_generator=anchors, head=head, **common.detector_kwargs(), **options
        )  # fmt: skip
