"""TASKS: one LightningModule per task, registered lazily (listing does not import Lightning)."""

from visionkit.registries import TASKS

TASKS.register("visionkit.tasks.classification:ClassificationTask", name="classification")
