"""HEADS: one file per task family; importing this package registers them all."""

from visionkit.models.heads import classification  # noqa: F401
