"""BACKBONES: every file registers its backbones; all follow the contract in ``base``."""

from visionkit.models.backbones import simple_cnn, timm_backbone  # noqa: F401
