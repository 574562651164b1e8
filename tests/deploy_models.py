"""Tiny models of every task built in-process and saved as visionkit checkpoints, for the tests of
the Python API (visionkit.load), predict and export: no training run is what those test."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

LABEL_MAP = {"names": ["ant", "bee", "cow"], "ids": [3, 7, 12]}  # non-contiguous dataset ids
BACKBONE = {"name": "simple_cnn", "channels": [8, 8, 8, 8], "act": "relu", "norm": "bn"}
MODELS: dict[str, dict[str, Any]] = {
    "classification": {"backbone": BACKBONE, "head": {"name": "linear"}},
    "semantic_segmentation": {"backbone": BACKBONE, "head": {"name": "fcn", "mid_channels": 8}},
    "detection": {
        "backbone": BACKBONE,
        "neck": {"name": "fpn", "out_channels": 8, "in_indices": [1, 2, 3]},
        "head": {
            "name": "fasterrcnn",
            "min_size": 64,
            "max_size": 64,
            "representation_size": 16,
            "score_thresh": 0.0,
        },
    },
    "instance_segmentation": {
        "backbone": BACKBONE,
        "neck": {"name": "fpn", "out_channels": 8, "in_indices": [1, 2, 3]},
        "head": {
            "name": "maskrcnn",
            "min_size": 64,
            "max_size": 64,
            "representation_size": 16,
            "mask_channels": 8,
            "detections_per_img": 20,
            "score_thresh": 0.0,
        },
    },
}
# the real-time detector (cspnet + pafpn + rtdet), exported like the torchvision ones
RTDET = {
    "backbone": {
        "name": "cspnet",
        "widen_factor": 0.125,
        "num_stages": 3,
        "act": "swish",
        "norm": "bn",
    },
    "neck": {"name": "pafpn", "out_channels": 8, "in_indices": [1, 2, 3], "act": "swish"},
    "head": {
        "name": "rtdet",
        "min_size": 64,
        "max_size": 64,
        "num_convs": 1,
        "score_thresh": 0.0,
        "detections_per_img": 20,
        "merge_boxes": True,  # weighted NMS in the exported graph too
    },
}
# its instance-segmentation variant (mask prototypes), exported like Mask R-CNN; with distance bins
# (reg_max > 0, their softmax expectation in the graph), so that both box decodings are exported
RTDET_SEG = {**RTDET, "head": {**RTDET["head"], "name": "rtdet_seg", "num_protos": 4, "proto_channels": 8, "reg_max": 4}}  # fmt: skip
MEAN, STD = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]


def preprocessing(task: str, image_size: int = 40) -> dict[str, Any]:
    """What a datamodule with ``data.image_size=image_size`` and these mean/std records."""
    detection = task in ("detection", "instance_segmentation")
    specs = [] if detection else [{"name": "resize", "size": [image_size, image_size], "antialias": True}]  # fmt: skip
    return {"image_size": image_size, "mean": MEAN, "std": STD, "eval_transforms": specs, "normalize": not detection}  # fmt: skip


def build(task_name: str, seed: int = 0, model: dict[str, Any] | None = None) -> Any:
    """An untrained (seeded) task with the 3-class label map, in eval mode (``model``: another
    model config than the task's in MODELS)."""
    from visionkit.registries import TASKS

    torch.manual_seed(seed)
    label_map = dict(LABEL_MAP)
    if task_name == "semantic_segmentation":  # index 0 is the background class
        label_map = {"names": ["background", *LABEL_MAP["names"]], "ids": [0, *LABEL_MAP["ids"]]}
    task = TASKS.get(task_name)(
        model=model or MODELS[task_name],
        num_classes=len(label_map["ids"]),
        label_map=label_map,
        preprocessing=preprocessing(task_name),
        optimizer={"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3},
    )
    return task.eval()


def save(task: Any, path: Path) -> Path:
    """``task`` as a checkpoint file, as Lightning and BaseTask.on_save_checkpoint write it."""
    import pytorch_lightning as pl

    ckpt = {
        "state_dict": task.state_dict(),
        "hyper_parameters": dict(task.hparams),
        "pytorch-lightning_version": pl.__version__,
        "epoch": 0,
        "global_step": 0,
    }
    task.on_save_checkpoint(ckpt)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)
    return path


def pictures(root: Path, sizes: dict[str, tuple[int, int]]) -> dict[str, Path]:
    """Random pictures (PNG/JPEG by suffix) of the given (width, height), each its own size."""
    rng = np.random.default_rng(1)
    out = {}
    for name, (w, h) in sizes.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        arr[h // 4 : h // 2, w // 4 : w // 2] = (230, 40, 40)  # something to detect
        Image.fromarray(arr).save(path)
        out[name] = path
    return out
