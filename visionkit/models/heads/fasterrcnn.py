"""``fasterrcnn``: torchvision's Faster R-CNN (RPN + RoI heads) on the task's backbone and neck."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops import MultiScaleRoIAlign

from visionkit.models.backbones.base import FeatureInfo
from visionkit.models.heads.detector_base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DetectorHead,
    TaskFeatures,
    anchor_generator,
    common_channels,
)


def rcnn_kwargs(
    feature_info: Sequence[FeatureInfo],
    num_classes: int,
    head: str,
    anchor_sizes: Sequence[Sequence[float]] | None,
    aspect_ratios: Sequence[float],
    anchor_scale: float,
    representation_size: int,
    score_thresh: float,
    detections_per_img: int,
    min_size: int,
    max_size: int,
    image_mean: Sequence[float],
    image_std: Sequence[float],
    extra: dict[str, Any],
) -> tuple[TaskFeatures, dict[str, Any]]:
    """The adapter and the keyword arguments shared by Faster and Mask R-CNN."""
    channels = common_channels(feature_info, head)
    names = [str(i) for i in range(len(feature_info))]
    adapter = TaskFeatures(channels)
    box_pool = MultiScaleRoIAlign(names, output_size=7, sampling_ratio=2)
    kwargs = dict(
        num_classes=None,
        min_size=min_size,
        max_size=max_size,
        image_mean=list(image_mean),
        image_std=list(image_std),
        rpn_anchor_generator=anchor_generator(
            feature_info, anchor_sizes, aspect_ratios, anchor_scale, head
        ),
        box_roi_pool=box_pool,
        box_head=TwoMLPHead(channels * 7 * 7, representation_size),
        box_predictor=FastRCNNPredictor(representation_size, num_classes + 1),
        box_score_thresh=score_thresh,
        box_detections_per_img=detections_per_img,
        **extra,
    )
    return adapter, kwargs


class FasterRCNNHead(DetectorHead):
    """Anchors (``anchor_sizes`` per level, default ``anchor_scale * reduction``), image
    ``min_size``/``max_size``, ``score_thresh``, ``detections_per_img`` are config keys; other
    FasterRCNN keyword arguments (``rpn_*``, ``box_*``) pass through.
    """

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
        min_size: int = 128,
        max_size: int = 256,
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
        **detector_kwargs: Any,
    ) -> None:
        super().__init__()
        self.adapter, kwargs = rcnn_kwargs(
            feature_info, num_classes, "fasterrcnn", anchor_sizes, aspect_ratios, anchor_scale,
            representation_size, score_thresh, detections_per_img, min_size, max_size,
            image_mean, image_std, detector_kwargs,
        )  # fmt: skip
        self.detector = FasterRCNN(self.adapter, **kwargs)
