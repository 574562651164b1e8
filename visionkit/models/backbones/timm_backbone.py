"""``timm``: any timm model as a backbone through ``features_only``, with stages for freezing."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from visionkit.errors import ConfigError
from visionkit.models.backbones.base import Backbone, FeatureInfo
from visionkit.registries import BACKBONES


@BACKBONES.register("timm")
class TimmBackbone(Backbone):
    """Wraps ``timm.create_model(model_name, features_only=True)``; weights never come from a hub
    over the network (a local hub cache folder is read by :meth:`cached_weights`).

    ``norm``/``act`` (visionkit specs) are passed to timm as ``norm_layer``/``act_layer`` for the
    models that accept them. Stages are the groups of timm modules that end at each returned
    feature, so a freeze schedule can unfreeze them one by one.
    """

    def __init__(
        self,
        model_name: str = "resnet18",
        out_indices: tuple[int, ...] | None = None,
        in_chans: int = 3,
        norm: Any = None,
        act: Any = None,
        **timm_kwargs: Any,
    ) -> None:
        super().__init__()
        import timm

        if not timm.is_model(model_name):
            import difflib

            close = difflib.get_close_matches(model_name, timm.list_models(), n=3)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ConfigError(f"unknown timm model '{model_name}'.{hint}")
        if norm is not None or act is not None:
            from visionkit.layers import timm_layer_kwargs

            timm_kwargs = {**timm_layer_kwargs(norm, act), **timm_kwargs}
        if out_indices is not None:
            timm_kwargs["out_indices"] = tuple(out_indices)
        self.model = timm.create_model(
            model_name, features_only=True, pretrained=False, in_chans=in_chans, **timm_kwargs
        )
        info = self.model.feature_info
        self.stage_info = [
            FeatureInfo(c, r) for c, r in zip(info.channels(), info.reduction(), strict=True)
        ]
        self._stage_groups = _stage_groups(self.model, info.module_name())

    def cached_weights(self, cache_dir: str | os.PathLike) -> Path:
        """This model's pretrained file in a Hugging Face hub cache folder, as timm downloads it
        (``models--timm--<name>.<tag>/snapshots/<revision>/model.safetensors``, the snapshot
        ``refs/main`` names); read from disk only, never downloaded.

        ``cache_dir`` is the hub cache (``$HF_HUB_CACHE``, ``~/.cache/huggingface/hub``) or the
        folder above it (``$HF_HOME``).
        """
        from huggingface_hub import try_to_load_from_cache

        repo = (getattr(self.model, "pretrained_cfg", None) or {}).get("hf_hub_id")
        if not repo:
            raise ConfigError(
                f"timm model has no Hugging Face hub weights to look up in {cache_dir} (config "
                f"key model.backbone.pretrained): give the weights file instead"
            )
        root = Path(cache_dir).expanduser()
        folders = [root, root / "hub"]
        for folder in folders:
            for filename in ("model.safetensors", "pytorch_model.bin"):
                found = try_to_load_from_cache(repo, filename, cache_dir=folder)
                if isinstance(found, str):
                    return Path(found)
        expected = "models--" + repo.replace("/", "--")
        raise ConfigError(
            f"no weights of timm's '{repo}' in the hub cache {root} (config key "
            f"model.backbone.pretrained): expected {root}/{expected}/snapshots/<revision>/"
            f"model.safetensors (or pytorch_model.bin) with refs/main naming the revision"
        )

    @property
    def stages(self) -> list[nn.ModuleList]:  # type: ignore[override]
        return self._stage_groups

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.model(x))


def _stage_groups(model: nn.Module, return_layers: list[str]) -> list[nn.ModuleList]:
    """Split the feature model, in execution order, into groups ending at each returned layer.

    A module is expanded into its children only when a returned layer lies inside it (timm's
    ``blocks.3`` inside ``blocks``); FeatureListNet flattens ``stages.0`` to ``stages_0``, so names
    are compared with dots replaced by underscores.
    """
    targets = {name.replace(".", "_") for name in return_layers}
    groups: list[nn.ModuleList] = []
    current: list[nn.Module] = []
    for name, module in _units(model, "", targets):
        current.append(module)
        if name in targets:
            groups.append(nn.ModuleList(current))
            current = []
    if current and groups:
        groups[-1] = nn.ModuleList([*groups[-1], *current])
    return groups


def _units(module: nn.Module, prefix: str, targets: set[str]) -> Iterator[tuple[str, nn.Module]]:
    for name, child in module.named_children():
        path = f"{prefix}_{name}" if prefix else name
        if path not in targets and any(t.startswith(path + "_") for t in targets):
            yield from _units(child, path, targets)
        else:
            yield path, child
