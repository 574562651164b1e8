"""HEADS: one file per task family; importing this package registers them all.

The torchvision detector heads are registered lazily (``"module:attr"``): importing torchvision
costs seconds, which `visionkit list` and classification runs need not pay.
"""

from visionkit.models.heads import (  # noqa: F401
    classification,
    deeplabv3,
    fcn,
    multi_stage,
    segnet,
    unet,
)
from visionkit.registries import HEADS

HEADS.register("visionkit.models.heads.fasterrcnn:FasterRCNNHead", name="fasterrcnn", aliases=("faster_rcnn",))  # fmt: skip
HEADS.register("visionkit.models.heads.retinanet:RetinaNetHead", name="retinanet")
HEADS.register("visionkit.models.heads.fcos:FCOSHead", name="fcos")
HEADS.register("visionkit.models.heads.rtdet:RTDetHead", name="rtdet")
HEADS.register("visionkit.models.heads.rtdet_seg:RTDetSegHead", name="rtdet_seg")
HEADS.register("visionkit.models.heads.maskrcnn:MaskRCNNHead", name="maskrcnn", aliases=("mask_rcnn",))  # fmt: skip
HEADS.register("visionkit.models.heads.tv_segmentation:TorchvisionFCNHead", name="tv_fcn")
HEADS.register("visionkit.models.heads.tv_segmentation:TorchvisionDeepLabV3Head", name="tv_deeplabv3")  # fmt: skip
