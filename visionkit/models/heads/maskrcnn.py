"""``maskrcnn``: torchvision's Mask R-CNN (Faster R-CNN + a mask branch) on the task's features."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign

from visionkit.models.backbones.base import FeatureInfo
from visionkit.models.heads.detector_base import IMAGENET_MEAN, IMAGENET_STD, DetectorHead
from visionkit.models.heads.fasterrcnn import rcnn_kwargs


class MaskRCNNHead(DetectorHead):
    """Faster R-CNN's keys plus ``mask_channels`` (width of the 4-conv mask head). Evaluation
    outputs add ``masks`` float [M,1,H,W] (probabilities, input pixels).
    """

    def __init__(
        self,
        feature_info: list[FeatureInfo],
        num_classes: int,
        anchor_sizes: Sequence[Sequence[float]] | None = None,
        aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
        anchor_scale: float = 4.0,
        representation_size: int = 256,
        mask_channels: int = 64,
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
            feature_info, num_classes, "maskrcnn", anchor_sizes, aspect_ratios, anchor_scale,
            representation_size, score_thresh, detections_per_img, min_size, max_size,
            image_mean, image_std, detector_kwargs,
        )  # fmt: skip
        names = [str(i) for i in range(len(feature_info))]
        channels = self.adapter.out_channels
        kwargs["mask_roi_pool"] = MultiScaleRoIAlign(names, output_size=14, sampling_ratio=2)
        kwargs["mask_head"] = MaskRCNNHeads(channels, [mask_channels] * 4, 1)
        kwargs["mask_predictor"] = MaskRCNNPredictor(mask_channels, mask_channels, num_classes + 1)
        self.detector = MaskRCNN(self.adapter, **kwargs)
