"""``retinanet``: torchvision's RetinaNet (focal loss, dense anchors) on the task's features."""

from __future__ import annotations

from functools import partial
from typing import Any

from torch import nn
from torchvision.models.detection import RetinaNet
from torchvision.models.detection.retinanet import RetinaNetHead as TVRetinaNetHead

from visionkit.errors import ConfigError
from visionkit.models.backbones.base import FeatureInfo
from visionkit.models.heads.detector_base import DetectorHead, DetectorOptions

BOX_LOSSES = ("l1", "smooth_l1", "giou", "ciou", "diou")  # torchvision's regression losses


class RetinaNetHead(DetectorHead):
    """Anchors per level (``anchor_sizes`` or ``anchor_scale * reduction`` times 2^0, 2^1/3,
    2^2/3), ``min_size``/``max_size``, ``score_thresh``, ``detections_per_img`` are config keys;
    ``head_norm`` (``gn``: GroupNorm(32) in the head convs) and ``box_loss`` (``giou``) give
    torchvision's _v2 layout.
    """

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
        head = TVRetinaNetHead(
            self.channels, anchors.num_anchors_per_location()[0], num_classes + 1, norm_layer=norm
        )
        head.regression_head._loss_type = box_loss  # torchvision's own switch (it has no argument)
        self.detector = RetinaNet(
            self.adapter, num_classes + 1, anchor_generator=anchors, head=head, **common.detector_kwargs(), **options
        )  # fmt: skip
