"""``fcos``: torchvision's FCOS (anchor-free, centre-ness) on the task's features."""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import torch
from torch import nn
from torchvision.models.detection import FCOS
from torchvision.models.detection._utils import BoxLinearCoder
from torchvision.models.detection.fcos import FCOSClassificationHead, FCOSRegressionHead
from torchvision.models.detection.fcos import FCOSHead as TVFCOSHead

from visionkit.errors import ConfigError
from visionkit.models.backbones.base import FeatureInfo
from visionkit.models.heads.detector_base import (
    DetectorHead,
    DetectorOptions,
    anchor_labels,
    class_weighted_focal_loss,
)


class _FCOSHead(TVFCOSHead):
    """torchvision's FCOS head with GroupNorm groups dividing the channel count (it hard-codes 32)."""

    def __init__(self, channels: int, num_classes: int, num_convs: int) -> None:
        nn.Module.__init__(self)
        norm = partial(nn.GroupNorm, math.gcd(32, channels))
        self.box_coder = BoxLinearCoder(normalize_by_size=True)
        self.classification_head = FCOSClassificationHead(channels, 1, num_classes, num_convs, norm_layer=norm)  # fmt: skip
        self.regression_head = FCOSRegressionHead(channels, 1, num_convs, norm_layer=norm)
        self.register_buffer("class_weight", None, persistent=False)

    def compute_loss(self, targets: list[dict[str, torch.Tensor]], head_outputs: dict[str, torch.Tensor], anchors: list[torch.Tensor], matched_idxs: list[torch.Tensor]) -> dict[str, torch.Tensor]:  # fmt: skip
        """torchvision's losses; with ``class_weight`` (per detector class, background column
        first) the classification focal loss weights each foreground point by its class
        (:func:`class_weighted_focal_loss`), still divided by the number of foreground points."""
        losses = super().compute_loss(targets, head_outputs, anchors, matched_idxs)
        if self.class_weight is None:
            return losses
        labels = torch.stack([anchor_labels(t["labels"], m) for t, m in zip(targets, matched_idxs, strict=True)])  # fmt: skip
        loss = class_weighted_focal_loss(head_outputs["cls_logits"].flatten(0, 1), labels.flatten(), self.class_weight)  # fmt: skip
        losses["classification"] = loss / max(1, int((labels >= 0).sum()))
        return losses


class FCOSHead(DetectorHead):
    """One point per location; ``anchor_sizes`` (default ``anchor_scale * reduction``) set the
    centre-sampling scale per level; ``min_size``/``max_size``, ``score_thresh``,
    ``detections_per_img`` are config keys. ``task.class_weights`` weight the focal loss per class.
    """

    takes_class_weights = True

    def __init__(
        self,
        feature_info: list[FeatureInfo],
        num_classes: int,
        num_convs: int = 2,
        **options: Any,
    ) -> None:
        # one point per location: aspect ratio 1; what stays in options is FCOS's own keywords
        common = DetectorOptions.pop(options, anchor_scale=1.0, aspect_ratios=(1.0,), score_thresh=0.2)  # fmt: skip
        if tuple(common.aspect_ratios) != (1.0,):
            raise ConfigError(f"fcos: one point per location, aspect_ratios must be [1.0], got {list(common.aspect_ratios)} (model.head.aspect_ratios)")  # fmt: skip
        super().__init__("fcos", FCOS, feature_info, options)
        anchors = common.anchors(feature_info, "fcos")
        head = _FCOSHead(self.channels, num_classes + 1, num_convs)
        self.detector = FCOS(
            self.adapter, num_classes + 1, anchor_generator=anchors, head=head, **common.detector_kwargs(), **options
        )  # fmt: skip
