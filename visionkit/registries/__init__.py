"""Every registry of visionkit, declared once; each docstring is the family's callable contract.

Built-in entries are registered by the modules that define them (``visionkit.plugins.load_all``
imports those), third-party ones by entry-point plugins. Each registry loads both on its first
lookup, so ``import visionkit`` is all a library user writes (``visionkit.ACTIVATIONS.get(...)``).
"""

from __future__ import annotations

from typing import Any

from visionkit.errors import ConfigError, RegistryError
from visionkit.registries.registry import Registry


def _module_check(family: str):
    def check(obj: Any) -> None:
        import torch.nn as nn

        if not isinstance(obj, nn.Module):
            raise RegistryError(
                f"{family}: builder returned {type(obj).__name__}, not an nn.Module"
            )

    return check


def _backbone_check(obj: Any) -> None:
    _module_check("BACKBONES")(obj)
    for attr in ("feature_info", "stages"):
        if not hasattr(obj, attr):
            raise RegistryError(
                f"BACKBONES: {type(obj).__name__} has no '{attr}' (backbone contract)"
            )


def _norm_check(obj: Any) -> None:
    """A norm's running-statistics ``momentum`` (None: a cumulative average) in [0, 1] and its
    ``eps`` above 0, for every norm however built: torch accepts any number and a momentum of -1
    trains to statistics that explode without an error."""
    _module_check("NORMS")(obj)
    momentum, eps = getattr(obj, "momentum", None), getattr(obj, "eps", 1.0)
    if momentum is not None and not (isinstance(momentum, (int, float)) and 0 <= momentum <= 1):
        raise ConfigError(f"norm {type(obj).__name__}: momentum must be in [0, 1] or null, got {momentum!r} (config key model.norm.momentum or the part's own norm)")  # fmt: skip
    if not (isinstance(eps, (int, float)) and eps > 0):
        raise ConfigError(f"norm {type(obj).__name__}: eps must be > 0, got {eps!r} (config key model.norm.eps or the part's own norm)")  # fmt: skip


def _modules(name: str, contract: str, check: Any = None) -> Registry:
    """A registry whose builders return an ``nn.Module`` (checked on build)."""
    return Registry(name, contract, check or _module_check(name))


# one line per registry: its name and the callable contract of its entries
LAYERS = _modules("LAYERS", "(in_channels, out_channels, **kw) -> nn.Module; NCHW in, NCHW out")
NORMS = _modules("NORMS", "(num_channels, **kw) -> nn.Module normalising NCHW", _norm_check)
ACTIVATIONS = _modules("ACTIVATIONS", "(**kw) -> nn.Module; class attr/property `channel_multiplier` if it changes C")  # fmt: skip
UPSAMPLERS = _modules("UPSAMPLERS", "(in_channels, out_channels, scale_factor, **kw) -> nn.Module")
BACKBONES = _modules("BACKBONES", "(**kw) -> nn.Module: forward(x) -> list[Tensor]; .feature_info list[FeatureInfo]; .stages ModuleList input side first", _backbone_check)  # fmt: skip
NECKS = _modules("NECKS", "(feature_info, **kw) -> nn.Module: list[Tensor] -> list[Tensor]; .feature_info of its outputs")  # fmt: skip
HEADS = _modules("HEADS", "(feature_info, num_classes, **kw) -> nn.Module: task outputs (see visionkit.models.heads)")  # fmt: skip
LOSSES = _modules("LOSSES", "(**kw) -> nn.Module: (outputs, targets) -> scalar Tensor")
TRANSFORMS = Registry("TRANSFORMS", "(**kw) -> callable on torchvision tv_tensors samples (transforms.v2)")  # fmt: skip
DATASETS = Registry("DATASETS", "(task, **kw) -> LightningDataModule with num_classes, class_names, label_map, preprocessing()")  # fmt: skip
TASKS = Registry("TASKS", "(model, num_classes, class_names, optimizer, scheduler, **kw) -> LightningModule exposing backbone, neck, head")  # fmt: skip
CALLBACKS = Registry("CALLBACKS", "(**kw) -> lightning Callback (finetune schedules, visualisation)")  # fmt: skip

ALL: dict[str, Registry] = {
    reg.name.lower(): reg
    for reg in (
        LAYERS,
        NORMS,
        ACTIVATIONS,
        UPSAMPLERS,
        BACKBONES,
        NECKS,
        HEADS,
        LOSSES,
        TRANSFORMS,
        DATASETS,
        TASKS,
        CALLBACKS,
    )
}


def _load_all() -> None:
    """Fill every registry once (built-ins, then plugins), on the first lookup in any of them."""
    for reg in ALL.values():
        reg.fill = None
    from visionkit.plugins import load_all

    load_all()


for _reg in ALL.values():
    _reg.fill = _load_all
del _reg
