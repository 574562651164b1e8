"""BACKBONES: every file registers its backbones; all follow the contract in ``base``."""

from visionkit.models.backbones import cspnet, mobilenet, simple_cnn, timm_backbone, vgg  # noqa: F401
from visionkit.registries import BACKBONES

# torchvision-layout networks (lazy: they import torchvision)
BACKBONES.register("visionkit.models.backbones.torchvision_nets:ResNet", name="resnet")
BACKBONES.register("visionkit.models.backbones.torchvision_nets:MobileNetV3Large", name="mobilenet_v3_large")  # fmt: skip
