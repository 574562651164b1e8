"""``fasterrcnn``: torchvision's Faster R-CNN (RPN + RoI heads) on the task's backbone and neck."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.faster_rcnn import (
    FastRCNNConvFCHead,
    FastRCNNPredictor,
    TwoMLPHead,
)
from torchvision.models.detection.rpn import RPNHead

from visionkit.errors import ConfigError
from visionkit.layers.roi_align import MultiScaleRoIAlign
from visionkit.models.backbones.base import FeatureInfo
from visionkit.models.heads.detector_base import (
    DetectorHead,
    DetectorOptions,
    level_names,
)
from visionkit.models.heads.rpn import BatchedRPN


class FasterRCNNHead(DetectorHead):
    """Anchors (``anchor_sizes`` per level, default ``anchor_scale * reduction``), image
    ``min_size``/``max_size``, ``score_thresh``, ``detections_per_img`` are config keys; other
    FasterRCNN keyword arguments (``rpn_*``, ``box_*``) pass through. torchvision's layouts:
    ``roi_levels`` (the first N levels the RoI pooler reads; null: all, torchvision: all but the
    extra pooled level), ``rpn_conv_depth`` (_v2: 2), ``box_convs`` (_v2: 4 BN convs before one fc
    of ``representation_size``; 0: torchvision's two-fc head).
    """

    name: ClassVar[str] = "fasterrcnn"
    detector_class: ClassVar[type[FasterRCNN]] = FasterRCNN

    def __init__(
        self,
        feature_info: list[FeatureInfo],
        num_classes: int,
        representation_size: int = 256,
        roi_levels: int | None = None,
        rpn_conv_depth: int = 1,
        box_convs: int = 0,
        **options: Any,
    ) -> None:
        common = DetectorOptions.pop(options)  # what stays is the detector's own keywords
        super().__init__(self.name, self.detector_class, feature_info, options)
        levels = roi_level_names(feature_info, roi_levels, self.name)
        anchors = common.anchors(feature_info, self.name)
        if box_convs:
            box_head: nn.Module = FastRCNNConvFCHead(
                (self.channels, 7, 7), [self.channels] * int(box_convs), [representation_size], norm_layer=nn.BatchNorm2d
            )  # fmt: skip
        else:
            box_head = TwoMLPHead(self.channels * 7 * 7, representation_size)
        self.detector = self.detector_class(
            self.adapter,
            num_classes=None,
            rpn_anchor_generator=anchors,
            rpn_head=RPNHead(
                self.channels, anchors.num_anchors_per_location()[0], conv_depth=int(rpn_conv_depth)
            ),
            box_roi_pool=MultiScaleRoIAlign(
                levels, 7, 2, scales=[1 / f.reduction for f in feature_info[: len(levels)]]
            ),
            box_head=box_head,
            box_predictor=FastRCNNPredictor(representation_size, num_classes + 1),
            **common.detector_kwargs(prefix="box_"),
            **options,
        )
        BatchedRPN.adopt(self.detector.rpn)  # the same results without per-image loops


def roi_level_names(feature_info: Sequence[FeatureInfo], roi_levels: int | None, head: str) -> list[str]:  # fmt: skip
    """Names of the levels the RoI poolers read: the first ``roi_levels`` (None: all)."""
    names = level_names(feature_info)
    if roi_levels is None:
        return names
    if not 1 <= int(roi_levels) <= len(names):
        raise ConfigError(f"{head}: roi_levels must be in 1..{len(names)} (the feature levels), got {roi_levels} (model.head.roi_levels)")  # fmt: skip
    return names[: int(roi_levels)]
