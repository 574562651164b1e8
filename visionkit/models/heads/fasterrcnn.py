"""``fasterrcnn``: torchvision's Faster R-CNN (RPN + RoI heads) on the task's backbone and neck."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead

from visionkit.layers.roi_align import MultiScaleRoIAlign
from visionkit.models.backbones.base import FeatureInfo
from visionkit.models.heads.detector_base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DetectorHead,
    anchor_generator,
    image_transform_options,
    level_names,
)


class FasterRCNNHead(DetectorHead):
    """Anchors (``anchor_sizes`` per level, default ``anchor_scale * reduction``), image
    ``min_size``/``max_size``, ``score_thresh``, ``detections_per_img`` are config keys; other
    FasterRCNN keyword arguments (``rpn_*``, ``box_*``) pass through.
    """

    name: ClassVar[str] = "fasterrcnn"
    detector_class: ClassVar[type[FasterRCNN]] = FasterRCNN

    def __init__(
        self,
        feature_info: list[FeatureInfo],
        num_classes: int,
        anchor_sizes: Sequence[Sequence[float]] | None = None,
        aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
        anchor_scale: float = 4.0,
        representation_size: int = 256,
        score_thresh: float = 0.05,
        detections_per_img: int = 100,
        min_size: int = 800,
        max_size: int | None = None,
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
        **detector_kwargs: Any,
    ) -> None:
        super().__init__(self.name, self.detector_class, feature_info, detector_kwargs)
        self.detector = self.detector_class(
            self.adapter,
            num_classes=None,
            **image_transform_options(min_size, max_size, image_mean, image_std),
            rpn_anchor_generator=anchor_generator(
                feature_info, anchor_sizes, aspect_ratios, anchor_scale, self.name
            ),
            box_roi_pool=MultiScaleRoIAlign(
                level_names(feature_info), 7, 2, scales=[1 / f.reduction for f in feature_info]
            ),
            box_head=TwoMLPHead(self.channels * 7 * 7, representation_size),
            box_predictor=FastRCNNPredictor(representation_size, num_classes + 1),
            box_score_thresh=score_thresh,
            box_detections_per_img=detections_per_img,
            **detector_kwargs,
        )
