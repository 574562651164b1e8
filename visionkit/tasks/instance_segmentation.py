"""Instance segmentation: detection with masks (``maskrcnn``); box and mask COCO mAP.

Metrics are logged under torchmetrics' names for two IoU types: ``val/bbox_map``,
``val/segm_map``, ``test/segm_map_50``, ...; ``detections.json`` carries RLE masks.
"""

from __future__ import annotations

from visionkit.tasks.detection import DetectionTask


class InstanceSegmentationTask(DetectionTask):
    """Targets add ``masks`` uint8 [M,H,W]; predictions add ``masks`` float [M,1,H,W]."""

    task_name = "instance_segmentation"
    iou_types = ("bbox", "segm")
