"""Offline pretrained weights: ``model.backbone.pretrained=<path>``; nothing goes to a hub.

Accepted files: a visionkit (Lightning) checkpoint — its backbone, even from a run of another
task (``model.pretrained=<ckpt>``, :func:`load_pretrained` with ``whole=True``, also loads its neck
when shapes match and its head when the task and class count match) —, a timm-format
or torchvision state dict (``torch.load(weights_only=True)``), or a ``.safetensors`` file. Plain
state dicts are matched to the backbone by key (dots and underscores equivalent, so timm's
``features_only`` renaming ``stages.0`` -> ``stages_0`` is absorbed) and shape; missing and
unexpected keys are reported. For a timm backbone the path may also be a local Hugging Face hub
cache folder (``~/.cache/huggingface/hub``): the model's file is looked up there, offline.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from visionkit import checkpoints
from visionkit.errors import ConfigError

WRAPPER_KEYS = ("state_dict", "model", "model_state", "module")  # common state-dict holders
CONFIG_KEY = "model.backbone.pretrained"


@dataclass
class LoadReport:
    """What was loaded from a pretrained file, per part, and what was not."""

    path: str
    format: str
    loaded: dict[str, int] = field(default_factory=dict)  # part -> tensors loaded
    missing: list[str] = field(default_factory=list)  # model keys left as initialised
    unexpected: list[str] = field(default_factory=list)  # file keys not used
    messages: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = ", ".join(f"{k}: {v} tensors" for k, v in self.loaded.items()) or "nothing"
        lines = [f"pretrained {self.path} ({self.format}): loaded {parts}"]
        for label, keys in (("missing", self.missing), ("unexpected", self.unexpected)):
            if keys:
                more = f" ... (+{len(keys) - 5})" if len(keys) > 5 else ""
                lines.append(f"  {len(keys)} {label} keys: {', '.join(keys[:5])}{more}")
        lines += [f"  {m}" for m in self.messages]
        return "\n".join(lines)


def read_weights(path: str | os.PathLike) -> tuple[dict[str, Any], str]:
    """The file's content as a dict and its format (``visionkit``, ``state_dict``, ``safetensors``)."""
    path = Path(path).expanduser()
    if path.suffix == ".safetensors" and path.is_file():
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu"), "safetensors"
    obj = checkpoints.load(path, key=CONFIG_KEY, what="pretrained weights")
    if not isinstance(obj, Mapping):
        raise ConfigError(f"{path}: expected a state dict or checkpoint, got {type(obj).__name__}")
    if checkpoints.META_KEY in obj and "state_dict" in obj:
        return dict(obj), "visionkit"
    for key in WRAPPER_KEYS:
        if isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    return _tensors(obj, path), "state_dict"


def _tensors(obj: Mapping[str, Any], path: Path) -> dict[str, torch.Tensor]:
    tensors = {k.removeprefix("module."): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ConfigError(f"{path} holds no tensors (keys: {sorted(obj)[:8]})")
    return tensors


def load_pretrained(
    task: Any, path: str | os.PathLike, verbose: bool = True, whole: bool = False
) -> LoadReport:
    """Load ``path`` into ``task`` (a BaseTask); returns (and prints) what was and wasn't loaded.

    The backbone only (``model.backbone.pretrained``), or with ``whole`` (``model.pretrained``)
    a visionkit checkpoint's neck and head too.
    """
    path = _weights_file(task.backbone, path)
    content, fmt = read_weights(path)
    report = LoadReport(str(path), fmt)
    if fmt == "visionkit":
        under = "model" if whole else "model.backbone"
        checkpoints.warn_suppliers(content[checkpoints.META_KEY], path, under=under)
        _load_checkpoint(task, content, report, whole)
    else:
        _load_state_dict(task.backbone, content, report, "backbone")
    if not report.loaded:
        raise ConfigError(
            f"no tensor of {path} matches the backbone {type(task.backbone).__name__} "
            f"(config key {CONFIG_KEY}); first file keys: {report.unexpected[:5]}"
        )
    if verbose:
        print(report.summary())
    return report


def _weights_file(backbone: nn.Module, path: str | os.PathLike) -> str | os.PathLike:
    """``path``, or for a folder the backbone's file in that local hub cache (timm backbones:
    :meth:`~visionkit.models.backbones.timm_backbone.TimmBackbone.cached_weights`)."""
    if not Path(path).expanduser().is_dir():
        return path
    lookup = getattr(backbone, "cached_weights", None)
    if lookup is None:
        raise ConfigError(
            f"{CONFIG_KEY}={path} is a folder: a hub cache folder works for timm backbones; "
            f"give the weights file of {type(backbone).__name__}"
        )
    return lookup(path)


def _load_checkpoint(task: Any, ckpt: dict[str, Any], report: LoadReport, whole: bool) -> None:
    """Backbone always; for the ``whole`` model also the neck when present, and the head for the
    same task and class count."""
    state = ckpt["state_dict"]
    if not whole:
        prefixes = {k.split(".", 1)[0] for k in state}
        others = [part for part in ("neck", "head") if part in prefixes]
        if others:
            report.messages.append(
                f"{' and '.join(others)} not loaded: {CONFIG_KEY} takes the backbone only "
                f"(model.pretrained=<checkpoint> loads the whole model)"
            )
        sub = {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}
        if sub:
            _load_state_dict(task.backbone, sub, report, "backbone")
        return
    hparams = ckpt.get("hyper_parameters") or {}
    parts: list[tuple[str, nn.Module | None]] = [
        ("backbone", task.backbone), ("neck", getattr(task, "neck", None)),
    ]  # fmt: skip
    same_task = (ckpt.get("visionkit") or {}).get("task") == getattr(task, "task_name", None)
    saved_k = hparams.get("num_classes")
    if same_task and saved_k == task.num_classes:
        parts.append(("head", task.head))
    else:
        why = (
            f"checkpoint has {saved_k} classes, this run {task.num_classes}"
            if same_task
            else f"checkpoint is from task '{(ckpt.get('visionkit') or {}).get('task')}'"
        )
        report.messages.append(f"head re-initialised ({why})")
    used: set[str] = set()
    for name, module in parts:
        sub = {k[len(name) + 1 :]: v for k, v in state.items() if k.startswith(name + ".")}
        if module is None or not sub:
            continue
        _load_state_dict(module, sub, report, name, strict_shapes=name != "backbone")
        used.update(f"{name}.{k}" for k in sub)
    report.unexpected += [k for k in state if k not in used and not k.startswith(("head.", "criterion."))]  # fmt: skip


def _norm(key: str) -> str:
    return key.replace(".", "_")


def _prefixes(key: str) -> list[str]:
    parts = key.split(".")
    return [""] + [".".join(parts[:i]) + "." for i in range(1, min(len(parts), 3))]


def _best_prefixes(target: list[str], source: list[str]) -> tuple[str, str]:
    """The (target, source) key prefixes under which most source keys find a target key.

    Absorbs wrappers: timm's ``model.`` inside our adapter, ``backbone.`` in a saved task.
    """
    if not target or not source:
        return "", ""
    norms = {_norm(k) for k in target}
    best, best_count = ("", ""), -1
    for tp in _prefixes(target[0]):
        for sp in _prefixes(source[0]):
            count = sum(_norm(tp + k.removeprefix(sp)) in norms for k in source if k.startswith(sp))
            if count > best_count:
                best, best_count = (tp, sp), count
    return best


def _load_state_dict(
    module: nn.Module,
    source: Mapping[str, torch.Tensor],
    report: LoadReport,
    part: str,
    strict_shapes: bool = False,
) -> None:
    """Copy tensors whose key (dots == underscores) and shape match; record the rest.

    For a non-backbone part (``strict_shapes``), any shape mismatch keeps the whole part as it was
    initialised (a half-loaded neck or head would be worse than a fresh one).
    """
    target = module.state_dict()
    by_norm = {_norm(k): k for k in target}
    t_prefix, s_prefix = _best_prefixes(list(target), list(source))
    new, mismatched, unexpected = {}, [], []
    for key, value in source.items():
        tkey = by_norm.get(_norm(t_prefix + key.removeprefix(s_prefix)))
        if not key.startswith(s_prefix):
            tkey = None
        if tkey is None:
            unexpected.append(key)
        elif target[tkey].shape != value.shape:
            mismatched.append(f"{key} {tuple(value.shape)} vs {tuple(target[tkey].shape)}")
        else:
            new[tkey] = value
    if mismatched:
        report.messages.append(
            f"{part}: {len(mismatched)} tensors with another shape skipped, e.g. {mismatched[0]}"
        )
        if strict_shapes:
            report.messages.append(f"{part} re-initialised (shapes differ)")
            return
    if not new:
        report.unexpected += [f"{part}:{k}" for k in unexpected]
        return
    module.load_state_dict(new, strict=False)
    report.loaded[part] = len(new)
    report.missing += [f"{part}.{k}" for k in target if k not in new]
    report.unexpected += [f"{part}:{k}" for k in unexpected]
