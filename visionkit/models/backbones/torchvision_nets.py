"""``resnet`` (18/34/50) and ``mobilenet_v3_large``: torchvision's networks with torchvision's
parameter names, so whole torchvision detection and segmentation state dicts map one-to-one.

The modules keep torchvision's attribute names (``conv1``, ``layer1`` ... / ``features.N``);
``stages`` groups them for freeze schedules without registering them twice. ``norm`` is a NORMS
name (``frozen_bn`` as torchvision's pretrained detectors, ``bn`` as its segmentation models).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from visionkit.errors import ConfigError
from visionkit.models.backbones.base import Backbone, FeatureInfo
from visionkit.registries import NORMS

RESNET_DEPTHS = {18: "resnet18", 34: "resnet34", 50: "resnet50"}


def _norm_layer(norm: Any) -> Any:
    """torchvision's ``norm_layer(num_features)`` from a NORMS spec (None: torchvision's own)."""
    if norm is None:
        return None
    return lambda channels: NORMS.build(norm, channels)


class ResNet(Backbone):
    """torchvision ResNet without ``avgpool``/``fc``. Stages: stem (conv1, bn1, relu, maxpool),
    layer1..layer4; ``dilation`` replaces the stride of layer2..4 (torchvision's
    ``replace_stride_with_dilation``: [False, True, True] for FCN/DeepLabV3, output stride 8).
    """

    # prefix of these parameters inside torchvision's detection/segmentation models' ``backbone``
    torchvision_prefix = ""

    def __init__(
        self,
        depth: int = 50,
        norm: Any = "bn",
        dilation: Sequence[bool] = (False, False, False),
        out_indices: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        import torchvision.models as tvm

        if int(depth) not in RESNET_DEPTHS:
            raise ConfigError(f"resnet: depth must be one of {sorted(RESNET_DEPTHS)}, got {depth} (model.backbone.depth)")  # fmt: skip
        dilation = [bool(d) for d in dilation]
        if len(dilation) != 3:
            raise ConfigError(f"resnet: dilation needs 3 booleans (layer2..4), got {dilation}")
        kwargs: dict[str, Any] = {"weights": None}
        if _norm_layer(norm) is not None:
            kwargs["norm_layer"] = _norm_layer(norm)
        if any(dilation):
            if int(depth) < 50:
                raise ConfigError(f"resnet{depth}: torchvision supports dilation only for depth 50")
            kwargs["replace_stride_with_dilation"] = dilation
        net = getattr(tvm, RESNET_DEPTHS[int(depth)])(**kwargs)
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            setattr(self, name, getattr(net, name))
        expansion = 4 if int(depth) >= 50 else 1
        reduction, info = 4, [FeatureInfo(64, 4)]
        for i, width in enumerate((64, 128, 256, 512)):
            if i > 0 and not dilation[i - 1]:
                reduction *= 2
            info.append(FeatureInfo(width * expansion, reduction))
        self.stage_info = info
        self.out_indices = tuple(out_indices) if out_indices is not None else None

    @property
    def stages(self) -> nn.ModuleList:  # type: ignore[override]
        stem = nn.Sequential(self.conv1, self.bn1, self.relu, self.maxpool)
        return nn.ModuleList([stem, self.layer1, self.layer2, self.layer3, self.layer4])


# MobileNetV3-Large's ``features`` split where its stride changes (C1..C5), with the first
# stride-32 block alone: torchvision's detection FPN reads that block's output and the last one's.
MOBILENET_STAGES = ((0, 2), (2, 4), (4, 7), (7, 13), (13, 14), (14, 17))


class MobileNetV3Large(Backbone):
    """torchvision MobileNetV3-Large ``features`` (17 blocks). Stages end after blocks 1, 3, 6,
    12, 13, 16 (channels 16, 24, 40, 112, 160, 960); ``dilated`` keeps the last stages at stride
    16 (DeepLabV3). ``norm`` None keeps torchvision's BatchNorm (eps 1e-3).
    """

    torchvision_prefix = "features."

    def __init__(
        self,
        norm: Any = None,
        dilated: bool = False,
        out_indices: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        import torchvision.models as tvm

        kwargs: dict[str, Any] = {"weights": None, "dilated": bool(dilated)}
        if _norm_layer(norm) is not None:
            kwargs["norm_layer"] = _norm_layer(norm)
        self.features = tvm.mobilenet_v3_large(**kwargs).features
        channels = (16, 24, 40, 112, 160, 960)
        reductions = (2, 4, 8, 16, 16, 16) if dilated else (2, 4, 8, 16, 32, 32)
        self.stage_info = [FeatureInfo(c, r) for c, r in zip(channels, reductions, strict=True)]
        self.out_indices = tuple(out_indices) if out_indices is not None else None

    @property
    def stages(self) -> nn.ModuleList:  # type: ignore[override]
        return nn.ModuleList(nn.Sequential(*self.features[a:b]) for a, b in MOBILENET_STAGES)
