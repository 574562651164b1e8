"""HEADS: one file per task family; importing this package registers them all."""

from visionkit.models.heads import (  # noqa: F401
    classification,
    deeplabv3,
    fasterrcnn,
    fcn,
    fcos,
    maskrcnn,
    multi_stage,
    retinanet,
    segnet,
    unet,
)
