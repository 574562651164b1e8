"""``model.pretrained=<file>``: a whole model's weights (backbone, neck and head), offline.

Accepted: a visionkit checkpoint of any task (its backbone always, neck and head where they fit:
:func:`visionkit.models.pretrained.load_pretrained`), or a state dict of one of torchvision's
detection/segmentation models (``fasterrcnn_resnet50_fpn`` ...) for a visionkit model of the same
layout (``conf/experiment/tv_<name>.yaml``). torchvision keys map onto ours by prefix:

    detection:    backbone.body.* -> backbone.*   backbone.fpn.* -> neck.fpn.*   * -> head.detector.*
    segmentation: backbone.*      -> backbone.*   classifier.*   -> head.classifier.*

(``backbone.*`` after the backbone's ``torchvision_prefix``, e.g. MobileNetV3's ``features.``).
Class-specific predictor tensors (box predictor, mask logits, classification logits, segmentation
classifier's last conv) are re-initialised when the class set differs, keeping the rows of classes
whose names match the pretrained ones (COCO's for torchvision detectors, VOC's for its segmenters).
"""

from __future__ import annotations

import os
import re
from typing import Any

import torch

from visionkit.errors import ConfigError

CONFIG_KEY = "model.pretrained"
# torchvision key (without .weight/.bias) -> values per class in a row block (4 for box deltas)
CLASS_SPECIFIC = {
    "roi_heads.box_predictor.cls_score": 1,
    "roi_heads.box_predictor.bbox_pred": 4,
    "roi_heads.mask_predictor.mask_fcn_logits": 1,
    "head.classification_head.cls_logits": 1,  # RetinaNet (anchors x classes rows), FCOS
    "classifier.4": 1,  # FCNHead / DeepLabHead last conv
}
DROPPED = ("aux_classifier.",)  # torchvision's auxiliary segmentation loss head: not used here


def is_detector(task: Any) -> bool:
    """Detection layout: a torchvision detector in the head (fasterrcnn, maskrcnn, retinanet, fcos)."""
    return hasattr(task.head, "detector")


def _prefix(task: Any) -> str:
    prefix = getattr(task.backbone, "torchvision_prefix", None)
    if prefix is None:
        raise ConfigError(
            f"{CONFIG_KEY}: a torchvision state dict needs a torchvision-layout backbone "
            f"(model/backbone=resnet or mobilenet_v3_large), not {type(task.backbone).__name__}; "
            "select a whole layout with experiment=tv_<model>"
        )
    return prefix


def from_torchvision_key(key: str, task: Any) -> str | None:
    """Our state-dict key for torchvision's ``key`` (None: not used by visionkit)."""
    if key.startswith(DROPPED):
        return None
    prefix = _prefix(task)
    if is_detector(task):
        if key.startswith("backbone.body."):
            return "backbone." + prefix + key.removeprefix("backbone.body.")
        if key.startswith("backbone.fpn."):
            return "neck." + key.removeprefix("backbone.")
        return "head.detector." + key
    if key.startswith("backbone."):
        return "backbone." + prefix + key.removeprefix("backbone.")
    if key.startswith("classifier."):
        return "head." + key
    return None


def to_torchvision_key(key: str, task: Any) -> str | None:
    """torchvision's state-dict key for our ``key`` (None: no torchvision counterpart)."""
    prefix = "backbone." + _prefix(task)
    if is_detector(task):
        if key.startswith(prefix):
            return "backbone.body." + key.removeprefix(prefix)
        if key.startswith("neck.fpn."):
            return "backbone." + key.removeprefix("neck.")
        if key.startswith("head.detector."):
            return key.removeprefix("head.detector.")
        return None
    if key.startswith(prefix):
        return "backbone." + key.removeprefix(prefix)
    if key.startswith("head.classifier."):
        return key.removeprefix("head.")
    return None


def torchvision_state_dict(task: Any) -> dict[str, torch.Tensor]:
    """The task's weights under torchvision's keys: ``load_state_dict`` of the torchvision model
    of the same layout (and class count + 1 for detectors) takes it with ``strict=True``."""
    out = {}
    for key, value in task.state_dict().items():
        tv_key = to_torchvision_key(key, task)
        if tv_key is not None:
            out[tv_key] = value
    return out


def _class_key(tv_key: str) -> str | None:
    base = tv_key.rsplit(".", 1)[0]
    return base if base in CLASS_SPECIFIC else None


def _norm_name(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", str(name).lower())


def pretrained_names(num_rows: int, detector: bool) -> list[str] | None:
    """Class names of torchvision's pretrained weights with ``num_rows`` classes (COCO's 91 for
    its detectors, VOC's 21 for its segmenters), read from torchvision's weights meta (offline)."""
    from torchvision.models import detection, segmentation

    weights = detection.FasterRCNN_ResNet50_FPN_Weights.DEFAULT if detector else segmentation.FCN_ResNet50_Weights.DEFAULT  # fmt: skip
    names = list(weights.meta["categories"])
    return names if len(names) == num_rows else None


def _row_map(task: Any, old_rows: int, detector: bool) -> tuple[dict[int, int], dict[str, str]]:
    """New class row -> old class row for classes whose names match (detectors keep background)."""
    names = task.class_names
    old = pretrained_names(old_rows, detector) or []
    index = {
        _norm_name(n): j for j, n in enumerate(old) if n != "N/A"
    }  # "__background__" -> "background"
    if detector:  # a detector's background row is kept as row 0, never matched to a class
        index.pop("background", None)
    rows, matched = ({0: 0}, {}) if detector else ({}, {})
    shift = 1 if detector else 0
    for i, name in enumerate(names):
        j = index.get(_norm_name(name), -1)
        if j >= 0:
            rows[i + shift] = j
            matched[name] = old[j]
    return rows, matched


def _remap(old: torch.Tensor, new: torch.Tensor, rows: dict[int, int], k_old: int, k_new: int, per: int) -> torch.Tensor:  # fmt: skip
    """``new`` (freshly initialised) with the blocks of matched classes copied from ``old``;
    rows are laid out ``anchor, class, per-class value`` as torchvision's predictors."""
    anchors = new.shape[0] // (k_new * per)
    out = new.clone()
    o = old.reshape(anchors, k_old, per, *old.shape[1:])
    n = out.reshape(anchors, k_new, per, *new.shape[1:])
    for i, j in rows.items():
        n[:, i] = o[:, j]
    return n.reshape(new.shape)


def load_whole(task: Any, path: str | os.PathLike, verbose: bool = True) -> dict[str, Any]:
    """Load ``path`` into ``task``; returns the report for results.json (``pretrained``)."""
    from visionkit.models.pretrained import load_pretrained, read_weights

    content, fmt = read_weights(path)
    if fmt == "visionkit":
        fresh = {k: v.clone() for k, v in task.head.state_dict().items()}
        report = load_pretrained(task, path, verbose=verbose, whole=True)
        out = {"path": str(path), "format": fmt, "loaded": report.loaded, "missing": len(report.missing), "unexpected": len(report.unexpected), "messages": report.messages}  # fmt: skip
        out.update(_head_of_other_classes(task, content, fresh))
        return out
    target = task.state_dict()
    detector = is_detector(task)
    new: dict[str, torch.Tensor] = {}
    unused: list[str] = []
    mismatched: list[str] = []
    reinit: list[str] = []
    matched: dict[str, str] = {}
    for tv_key, value in content.items():
        key = from_torchvision_key(tv_key, task)
        if key is None or key not in target:
            if not tv_key.endswith("num_batches_tracked"):
                unused.append(tv_key)
            continue
        want = target[key]
        if want.shape == value.shape and _class_key(tv_key) is None:
            new[key] = value
            continue
        base = _class_key(tv_key)
        if base is None or want.shape[1:] != value.shape[1:]:
            mismatched.append(f"{tv_key} {tuple(value.shape)} vs {tuple(want.shape)}")
            continue
        per = CLASS_SPECIFIC[base]
        k_new = task.num_classes + (1 if detector else 0)
        anchors = want.shape[0] // (k_new * per)
        k_old = value.shape[0] // max(anchors * per, 1)
        if anchors < 1 or anchors * k_new * per != want.shape[0] or k_old < 1 or k_old * anchors * per != value.shape[0]:  # fmt: skip
            mismatched.append(f"{tv_key} {tuple(value.shape)} vs {tuple(want.shape)}")
            continue
        unnamed = pretrained_names(k_old, detector) is None or all(n.isdigit() for n in task.class_names)  # fmt: skip
        if value.shape == want.shape and unnamed:  # same count, no names to tell otherwise: as is
            new[key] = value
            continue
        rows, matched = _row_map(task, k_old, detector)
        identical = value.shape == want.shape and all(rows.get(i) == i for i in range(k_new))
        if identical:
            new[key] = value
        else:
            new[key] = _remap(value, want, rows, k_old, k_new, per)
            reinit.append(key)
    if mismatched:
        raise ConfigError(
            f"{path}: {len(mismatched)} tensors do not fit this model's layout (config key "
            f"{CONFIG_KEY}; pick the matching experiment=tv_<model>), e.g. {mismatched[0]}"
        )
    if not new:
        raise ConfigError(f"{path}: no tensor matches this model (config key {CONFIG_KEY}); first file keys: {list(content)[:5]}")  # fmt: skip
    task.load_state_dict(new, strict=False)
    missing = [k for k in target if k not in new and not k.endswith("num_batches_tracked")]
    report = {
        "path": str(path),
        "format": "torchvision",
        "kept": len(new) - len(reinit),
        "reinitialised": reinit,
        "matched_classes": matched,
        "missing": missing,
        "unused": unused,
    }
    if verbose:
        print(
            f"pretrained {path} (torchvision layout): {report['kept']} tensors kept, "
            f"{len(reinit)} class-specific re-initialised ({len(matched)} classes matched by name), "
            f"{len(missing)} missing, {len(unused)} unused"
        )
    return report


def class_blocks(task: Any) -> dict[str, tuple[int, int]]:
    """Head tensors that depend on the class count: key -> (rows per class, extra classes such as
    a detector's background). Found by building the head once more with one class more."""
    from visionkit.registries import HEADS

    bigger = HEADS.build(task.hparams["model"]["head"], task.feature_info, task.num_classes + 1)
    now = task.head.state_dict()
    blocks = {}
    for key, value in bigger.state_dict().items():
        if key in now and value.shape != now[key].shape and value.shape[1:] == now[key].shape[1:]:
            block = value.shape[0] - now[key].shape[0]
            extra = now[key].shape[0] // block - task.num_classes
            blocks[key] = (block, extra)
    return blocks


def _head_of_other_classes(task: Any, ckpt: dict[str, Any], fresh: dict[str, torch.Tensor]) -> dict[str, Any]:  # fmt: skip
    """A checkpoint of the same task with other classes: its head is kept except the class rows of
    classes it does not know by name (those keep their fresh initialisation)."""
    meta = ckpt.get("visionkit") or {}
    hparams = ckpt.get("hyper_parameters") or {}
    old_names = list((hparams.get("label_map") or {}).get("names") or [])
    old_k = hparams.get("num_classes")
    if meta.get("task") != task.task_name or not old_names or (old_k == task.num_classes and old_names == task.class_names):  # fmt: skip
        return {}
    state = {
        k.removeprefix("head."): v for k, v in ckpt["state_dict"].items() if k.startswith("head.")
    }
    blocks = class_blocks(task)
    index = {_norm_name(n): j for j, n in enumerate(old_names)}
    matched = {
        n: old_names[index[_norm_name(n)]] for n in task.class_names if _norm_name(n) in index
    }
    new_state, reinit = {}, []
    for key, target in fresh.items():
        value = state.get(key)
        if value is None:
            continue
        if key not in blocks:
            if value.shape == target.shape:
                new_state[key] = value
            continue
        block, extra = blocks[key]
        # RetinaNet's logits are anchor-major (anchor, class); other predictors class-major
        per = 1 if key.rsplit(".", 1)[0].endswith("classification_head.cls_logits") else block
        if value.shape[0] % block or value.shape[0] // block != old_k + extra:
            continue  # laid out otherwise: keep the fresh tensor
        rows = {e: e for e in range(extra)}  # background and the like: same meaning in both
        rows.update({extra + i: extra + index[_norm_name(n)] for i, n in enumerate(task.class_names) if _norm_name(n) in index})  # fmt: skip
        new_state[key] = _remap(value, target, rows, old_k + extra, task.num_classes + extra, per)
        reinit.append(f"head.{key}")
    task.head.load_state_dict(new_state, strict=False)
    return {
        "kept_head": len(new_state) - len(reinit),
        "reinitialised": reinit,
        "matched_classes": matched,
    }
