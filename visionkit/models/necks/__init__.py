"""NECKS: feature transforms between backbone and head (e.g. FPN)."""

from visionkit.models.necks import fpn  # noqa: F401
