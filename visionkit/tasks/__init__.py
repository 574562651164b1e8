"""TASKS: one LightningModule per task, registered lazily (listing does not import Lightning)."""

from visionkit.registries import TASKS

TASKS.register("visionkit.tasks.classification:ClassificationTask", name="classification")
TASKS.register(
    "visionkit.tasks.semantic_segmentation:SemanticSegmentationTask", name="semantic_segmentation"
)
TASKS.register("visionkit.tasks.detection:DetectionTask", name="detection")
TASKS.register(
    "visionkit.tasks.instance_segmentation:InstanceSegmentationTask", name="instance_segmentation"
)
