"""visionkit: Hydra-composed PyTorch Lightning models for the four image-recognition tasks.

The public API is re-exported flatly and lazily, so ``python -m visionkit --help`` stays free of
torch imports.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "Registry": "visionkit.registries.registry",
    "VisionkitError": "visionkit.errors",
    "RegistryError": "visionkit.errors",
    "ConfigError": "visionkit.errors",
    "DataError": "visionkit.errors",
    "PluginError": "visionkit.errors",
    "load_all": "visionkit.plugins",
    "load": "visionkit.inference",
    "Model": "visionkit.inference",
    "Classification": "visionkit.predictions",
    "Detections": "visionkit.predictions",
    "SemanticMap": "visionkit.predictions",
    "LAYERS": "visionkit.registries",
    "NORMS": "visionkit.registries",
    "ACTIVATIONS": "visionkit.registries",
    "UPSAMPLERS": "visionkit.registries",
    "BACKBONES": "visionkit.registries",
    "NECKS": "visionkit.registries",
    "HEADS": "visionkit.registries",
    "LOSSES": "visionkit.registries",
    "TRANSFORMS": "visionkit.registries",
    "DATASETS": "visionkit.registries",
    "TASKS": "visionkit.registries",
    "CALLBACKS": "visionkit.registries",
    "FeatureInfo": "visionkit.models.backbones.base",
    "Backbone": "visionkit.models.backbones.base",
    "roi_align": "visionkit.layers.roi_align",
    "MultiScaleRoIAlign": "visionkit.layers.roi_align",
    "WarmupCosineLR": "visionkit.schedulers",
    "CSVLogger": "visionkit.loggers",
    "ModelCheckpoint": "visionkit.callbacks.resuming",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'visionkit' has no attribute '{name}'")
    return getattr(importlib.import_module(module), name)
