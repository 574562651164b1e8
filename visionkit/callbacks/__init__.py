"""CALLBACKS: finetune schedules and visualisation, registered lazily (they import Lightning)."""

from visionkit.registries import CALLBACKS  # noqa: F401
