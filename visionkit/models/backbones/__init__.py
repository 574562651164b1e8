"""BACKBONES: every file registers its backbones; all follow the contract in ``base``."""

from visionkit.models.backbones import mobilenet, simple_cnn, timm_backbone, vgg  # noqa: F401
