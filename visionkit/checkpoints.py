"""Checkpoints are data, not code: the one loader, the task check and the record of suppliers.

Every checkpoint visionkit reads (``test``, ``predict``, resume, ``model.backbone.pretrained``,
the best checkpoint tested after training) is unpickled with ``torch.load(weights_only=True)``.
visionkit and Lightning store only tensors and plain values (dict, list, tuple, str, numbers,
None) for every task, finetune schedule, scheduler and optimizer, so no class is added to torch's
allow-list: a file whose unpickling needs one (code) is refused with one line naming it.

A checkpoint also records which package, at which version, supplied each registered part named in
its hyperparameters (task, backbone, neck, head, norm, act, ...); loading it where another package
or version supplies a part prints one warning line per change, naming both.
"""

from __future__ import annotations

import os
import pickle
import sys
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from visionkit.errors import ConfigError, RegistryError

META_KEY = "visionkit"  # the checkpoint entry written by BaseTask.on_save_checkpoint
# hyperparameter keys whose value names a registered part (a name or a {"name": ...} spec)
PART_KEYS = {
    "task": "tasks",
    "backbone": "backbones",
    "neck": "necks",
    "head": "heads",
    "norm": "norms",
    "dw_norm": "norms",
    "act": "activations",
    "dw_act": "activations",
    "layer": "layers",
    "upsampler": "upsamplers",
    "loss": "losses",
}
# Lightning's own ckpt_path values (resolved by the trainer, not files)
LIGHTNING_PATHS = ("last", "best", "hpc", "registry")


def require_file(path: str | os.PathLike, key: str = "ckpt_path", what: str = "checkpoint") -> Path:
    """``path`` as an existing file, else one ConfigError naming it and the config ``key``: the
    part of ``load`` that needs no torch, which ``runner.check_paths`` runs before the imports."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"{what} not found: {path} (config key {key})")
    return path


def load(path: str | os.PathLike, key: str = "ckpt_path", what: str = "checkpoint") -> Any:
    """The content of ``path`` read with ``weights_only=True``; any file that is not plain data
    (or not a checkpoint) is one ConfigError naming it and the config ``key`` that gave it."""
    import torch

    path = require_file(path, key, what)
    try:
        with warnings.catch_warnings():  # a crafted pickle's protocol: the refusal says enough
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only load failed" not in str(exc).lower():
            raise ConfigError(_unreadable(path, key, what, exc)) from exc
        detail, where = _refused(exc), f"{what} {path} (config key {key})"
        if not detail.startswith("Unsupported global"):  # an opcode: not a checkpoint, or code
            raise ConfigError(
                f"refusing to load {where}: torch.load(weights_only=True) cannot read it as plain "
                f"data ({detail}); it is not a checkpoint, or it holds code"
            ) from None
        raise ConfigError(
            f"refusing to load {where}: it holds objects that are not plain data ({detail}), and "
            "unpickling them could run code; visionkit loads checkpoints only with "
            "torch.load(weights_only=True)"
        ) from None
    except Exception as exc:  # torch.load raises many types on a damaged file: reported, chained
        raise ConfigError(_unreadable(path, key, what, exc)) from exc


def _refused(exc: Exception) -> str:
    """What the weights-only unpickler refused, e.g. ``Unsupported global: GLOBAL posix.system``."""
    detail = str(exc).partition("WeightsUnpickler error:")[2]
    lines = [line.strip() for line in detail.splitlines() if line.strip()]
    return lines[0].split(" was not an allowed global")[0] if lines else "not plain data"


def _unreadable(path: Path, key: str, what: str, exc: Exception) -> str:
    first = (str(exc).strip().splitlines() or [""])[0]
    return (
        f"cannot read {what} {path} (config key {key}): not a torch.save file, or damaged "
        f"({type(exc).__name__}: {first})"
    )


def meta(ckpt: Any, path: str | os.PathLike) -> dict[str, Any]:
    """The ``visionkit`` entry of a loaded checkpoint (task, version, suppliers)."""
    info = ckpt.get(META_KEY) if isinstance(ckpt, Mapping) else None
    if not isinstance(info, Mapping) or "task" not in info:
        raise ConfigError(f"{path} is not a visionkit checkpoint (no '{META_KEY}' entry)")
    return dict(info)


def check_resume(path: str | os.PathLike, task_name: str) -> dict[str, Any]:
    """Before training resumes from ``path``: it must be plain data of the same task; a part
    supplied by another package or version than when it was saved is warned about. Returns the
    checkpoint's content (empty for Lightning's own ``last``/``best``/... keywords)."""
    if str(path) in LIGHTNING_PATHS and not Path(path).is_file():
        return {}  # Lightning resolves these and loads them with weights_only=True
    ckpt = load(path)
    info = meta(ckpt, path)
    if info["task"] != task_name:
        raise ConfigError(
            f"checkpoint {path} is from task '{info['task']}', but this run's task is "
            f"'{task_name}' (config keys ckpt_path, task): resume it with task={info['task']}, "
            f"or take only its backbone with model.backbone.pretrained={path}"
        )
    warn_suppliers(info, path)
    return ckpt


def check_resume_fits(path: str | os.PathLike, ckpt: Mapping[str, Any], task: Any) -> None:
    """The task built from this run's config must take the checkpoint's weights and classes:
    else one ConfigError naming the config keys that differ (not Lightning's state-dict dump);
    model keys that differ without changing any weight's shape are warned about."""
    if not ckpt:
        return
    saved = ckpt.get("hyper_parameters") or {}
    changed = _differences(saved.get("model"), task.hparams.get("model"), "model")
    saved_ids = (saved.get("label_map") or {}).get("ids")
    ids = (task.hparams.get("label_map") or {}).get("ids")
    if saved_ids is not None and ids is not None and list(saved_ids) != list(ids):
        raise ConfigError(
            f"checkpoint {path} was trained on category ids {list(saved_ids)}, but this run's "
            f"data has {list(ids)} (config keys ckpt_path, data.*): resume on the same data, or "
            f"start a new run with model.backbone.pretrained={path}"
        )
    weights = ckpt.get("state_dict") or {}
    own = task.state_dict()
    fits = set(weights) == set(own) and all(weights[k].shape == own[k].shape for k in own)
    listed = "; ".join(changed[:4]) + ("; ..." if len(changed) > 4 else "")
    if not fits:
        raise ConfigError(
            f"checkpoint {path} does not fit the model of this run's config"
            + (f" ({listed})" if changed else "")
            + f": resume with the run's model config, or start a new run with "
            f"model.backbone.pretrained={path}"
        )
    if changed:
        print(f"warning: resuming {path} with another model config: {listed}", file=sys.stderr)


def _differences(saved: Any, now: Any, key: str) -> list[str]:
    """``"key: <saved> (checkpoint) vs <now> (this run)"`` for every leaf that differs."""
    if isinstance(saved, Mapping) and isinstance(now, Mapping):
        out = []
        for k in sorted(set(saved) | set(now), key=str):
            out += _differences(saved.get(k), now.get(k), f"{key}.{k}")
        return out
    return [] if saved == now else [f"{key}: {saved!r} (checkpoint) vs {now!r} (this run)"]


# -- suppliers ------------------------------------------------------------------------------------
def suppliers_record(hparams: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Package and version of each registered part named in ``hparams`` (plain data, for the
    checkpoint): ``[{"family", "name", "package", "version", "keys"}]``."""
    from visionkit.registries import ALL
    from visionkit.registries.registry import version_of

    records: dict[tuple[str, str], dict[str, Any]] = {}
    for key, family, name in _named_parts(hparams):
        try:
            entry = ALL[family].entry(name)
        except RegistryError:  # not a registered name (e.g. a timm model name): nothing to record
            continue
        record = records.setdefault(
            (family, name),
            {"family": family, "name": name, "package": entry.source,
             "version": version_of(entry.source), "keys": []},
        )  # fmt: skip
        record["keys"].append(key)
    return list(records.values())


def _named_parts(node: Any, path: str = "") -> Iterator[tuple[str, str, str]]:
    """(config key, registry family, name as given) for every part named under ``node``."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            where = f"{path}.{key}" if path else str(key)
            name = value.get("name") if isinstance(value, Mapping) else value
            if str(key) in PART_KEYS and isinstance(name, str):
                yield where, PART_KEYS[str(key)], name
            yield from _named_parts(value, where)
    elif isinstance(node, list | tuple):
        for i, value in enumerate(node):
            yield from _named_parts(value, f"{path}.{i}")


def warn_suppliers(info: Mapping[str, Any], path: str | os.PathLike, under: str = "") -> list[str]:
    """Warn (stderr, one line per part) where a part recorded in the checkpoint is now supplied by
    another package or version; ``under`` limits it to parts given under that config key."""
    from visionkit.registries import ALL
    from visionkit.registries.registry import same_source, supplier_label, version_of

    lines = []
    for record in info.get("suppliers") or []:
        registry = ALL.get(str(record.get("family")))
        keys = list(record.get("keys", []))
        if registry is None or not any(k.startswith(under) for k in keys):
            continue
        try:
            entry = registry.entry(record["name"])
        except RegistryError:  # unknown or a clash: building the task reports it
            continue
        version = version_of(entry.source)
        if same_source(entry.source, record["package"]) and version == record.get("version"):
            continue
        lines.append(
            f"warning: {path}: {record['family']} '{record['name']}' ({', '.join(keys)}) was "
            f"supplied by {supplier_label(record['package'], record.get('version'))} when saved, "
            f"here by {supplier_label(entry.source, version)}"
        )
    for line in lines:
        print(line, file=sys.stderr)
    return lines
