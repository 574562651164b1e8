"""``maskrcnn``: torchvision's Mask R-CNN (Faster R-CNN + a mask branch) on the task's features."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

from visionkit.layers.roi_align import MultiScaleRoIAlign
from visionkit.models.backbones.base import FeatureInfo
from visionkit.models.heads.detector_base import common_channels
from visionkit.models.heads.fasterrcnn import FasterRCNNHead, roi_level_names


class MaskRCNNHead(FasterRCNNHead):
    """Faster R-CNN's keys plus ``mask_channels`` (width of the 4-conv mask head; ``mask_norm``
    true puts BatchNorm in it, as torchvision's _v2). Evaluation
    outputs add ``masks`` float [M,1,H,W] (probabilities, input pixels).
    """

    name: ClassVar[str] = "maskrcnn"
    detector_class: ClassVar[type[MaskRCNN]] = MaskRCNN

    def __init__(
        self,
        feature_info: list[FeatureInfo],
        num_classes: int,
        mask_channels: int = 32,
        mask_norm: bool = False,
        **kwargs: Any,
    ) -> None:
        channels = common_channels(feature_info, self.name)
        levels = roi_level_names(feature_info, kwargs.get("roi_levels"), self.name)
        norm = nn.BatchNorm2d if mask_norm else None
        super().__init__(
            feature_info,
            num_classes,
            mask_roi_pool=MultiScaleRoIAlign(
                levels, 14, 2, scales=[1 / f.reduction for f in feature_info[: len(levels)]]
            ),
            mask_head=MaskRCNNHeads(channels, [mask_channels] * 4, 1, norm_layer=norm),
            mask_predictor=MaskRCNNPredictor(mask_channels, mask_channels, num_classes + 1),
            **kwargs,
        )
