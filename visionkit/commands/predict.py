"""``python -m visionkit predict ckpt_path=... input=<image or folder>``: predictions as pictures.

Outputs in the run directory mirror the input tree (a folder is searched with its sub-folders
unless ``recursive=false``, skipping run folders, those holding ``.hydra/``, so predicting ``.``
again does not predict earlier outputs), so no two inputs share an output file::

    input/                 run directory/
      img.jpg                predictions/img.png      overlay (boxes, masks, blended classes)
      a/img.png              predictions/a/img.png
      b/img.png              predictions/b/img.png
      x.png                  predictions/x.png
      x_labels.png           predictions/x_labels.png
      c/y.png                predictions/c/y.png.png  (stems collide in one folder: the
      c/y.jpg                predictions/c/y.jpg.png   full file name + ".png")
                             labels/<same names>      semantic segmentation: class index per pixel
                             images.json              every task: id, file_name, size, outputs

An output is ``<stem>.png`` (every picture is written as PNG) unless another input of the same
folder would get the same name (case-insensitively), in which case it is ``<file name>.png``.
Overlays and label maps live in separate trees, so no input name can reach another's label map.
``file_name`` in images.json, predictions.json (classification) and detections.json's
``image_id`` (via images.json) name each input by its path relative to the input folder (for a
single file: its name). Detection tasks also write ``detections.json`` (COCO results, the
dataset's category ids).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path, PurePosixPath
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from visionkit import runner
from visionkit.errors import ConfigError


def find_images(source: str | Path, recursive: bool = True) -> tuple[Path, list[Path], list[Path]]:
    """(root, image files sorted by path, files skipped) of ``source``: a file or a folder (with
    its sub-folders when ``recursive``); the images the datamodules accept. Files of run
    directories (a sub-folder holding ``.hydra/``, e.g. an earlier predict's) are skipped too."""
    from visionkit.data.datasets.folders import IMAGE_EXTENSIONS, list_images

    path = Path(source).expanduser()
    if path.is_file():
        return path.parent, [path], []
    if not path.is_dir():
        raise ConfigError(f"predict: input '{source}' is neither an image file nor a folder (config key input)")  # fmt: skip
    images, others = list_images(path)
    runs = {h.parent for h in path.rglob(".hydra") if h.is_dir() and h.parent != path}
    if not recursive:
        images, others = [p for p in images if p.parent == path], [p for p in others if p.parent == path]  # fmt: skip
    elif runs:
        in_run = {p for p in images if runs.intersection(p.parents)}
        images, others = [p for p in images if p not in in_run], sorted([*others, *in_run])
    if not images:
        where = "" if recursive else " (sub-folders not searched: recursive=false)"
        raise ConfigError(f"predict: no images ({', '.join(IMAGE_EXTENSIONS)}) in {path}{where}")
    return path, images, others


def output_names(files: list[Path], root: Path) -> dict[Path, PurePosixPath]:
    """Each file's output path relative to an output tree: ``<folder>/<stem>.png``, or
    ``<folder>/<file name>.png`` for files whose stem-based names would collide (distinct by
    construction: distinct file names stay distinct with ``.png`` appended)."""
    rel = {f: PurePosixPath(f.relative_to(root).as_posix()) for f in files}
    full: set[Path] = set()
    while True:
        names = {f: r.parent / (f"{r.name}.png" if f in full else f"{r.stem}.png") for f, r in rel.items()}  # fmt: skip
        groups: dict[str, list[Path]] = defaultdict(list)
        for f, name in names.items():
            groups[str(name).casefold()].append(f)
        clashes = {f for group in groups.values() if len(group) > 1 for f in group} - full
        if not clashes:
            return names
        full |= clashes


def run(cfg: DictConfig) -> dict[str, Any]:
    """Predict every input image with the checkpoint's task; returns a summary of files written."""
    from visionkit.data.images import load_image
    from visionkit.overlays import save_png
    from visionkit.registries import DATASETS

    if not cfg.get("ckpt_path"):
        raise ConfigError("predict needs a checkpoint: add ckpt_path=<path to .ckpt>")
    root, files, others = find_images(cfg.input, bool(cfg.get("recursive", True)))
    out = runner.setup(cfg)
    task = runner.load_task_from_checkpoint(cfg.ckpt_path).eval()
    from visionkit.tta import enable_tta

    enable_tta(task, cfg.get("tta"))  # test-time augmentation; null: the task's forward as it is
    dm = DATASETS.build(cfg.data, task=task.task_name)  # preprocessing only: no files are read
    if cfg.get("score_thresh") is not None and hasattr(task, "overlay_score_thresh"):
        task.overlay_score_thresh = float(cfg.score_thresh)
    names = output_names(files, root)
    pictures, records, images, labels = [], [], [], []
    with torch.no_grad():
        for index, path in enumerate(files, start=1):
            raw = load_image(path)
            x = dm.eval_transform(raw)
            picture, extra = _predict_one(task, raw, x, index)
            overlay = PurePosixPath("predictions") / names[path]
            pictures.append(save_png(picture, out / overlay))
            h, w = raw.shape[-2:]
            file_name = path.relative_to(root).as_posix()
            image = {"id": index, "file_name": file_name, "height": int(h), "width": int(w), "overlay": str(overlay)}  # fmt: skip
            if task.task_name in ("detection", "instance_segmentation"):
                records.extend(extra)
            elif task.task_name == "semantic_segmentation":
                image["labels"] = str(PurePosixPath("labels") / names[path])
                save_png(extra.to(torch.uint8)[None].expand(3, -1, -1), out / image["labels"])
            else:
                labels.append({"file_name": file_name, **extra})
            images.append(image)
    (out / "images.json").write_text(json.dumps(images, indent=1))
    summary: dict[str, Any] = {"images": len(files), "pictures": pictures, "index": str(out / "images.json")}  # fmt: skip
    if task.task_name in ("detection", "instance_segmentation"):
        from visionkit.evaluation.coco import write_results

        write_results(out / "detections.json", records)  # atomic, like test's detections.json
        summary["detections"] = str(out / "detections.json")
    elif task.task_name == "classification":
        (out / "predictions.json").write_text(json.dumps(labels, indent=1))
        summary["predictions"] = str(out / "predictions.json")
    skipped = f" ({len(others)} other files skipped: not images, or in a run folder)" if others else ""  # fmt: skip
    print(f"predict: {len(files)} images of {root} -> {out / 'predictions'}{skipped}")
    return summary


def _predict_one(task: Any, raw: torch.Tensor, x: torch.Tensor, image_id: int) -> tuple[torch.Tensor, Any]:  # fmt: skip
    """(overlay picture, task-specific output) for one image; coordinates of the original image."""
    from visionkit.overlays import draw_detections, draw_semantic

    size = tuple(raw.shape[-2:])
    x = x.to(task.device)
    if task.task_name in ("detection", "instance_segmentation"):
        from visionkit.evaluation.coco import to_coco_results

        pred = task([x])[0]
        pred = {k: v.cpu() for k, v in pred.items()}
        pred = task._to_original(pred, tuple(x.shape[-2:]), size)
        records = to_coco_results([{**pred, "image_id": image_id}], task.label_ids(), task.mask_threshold)  # fmt: skip
        return task.draw(raw, pred), records
    logits = task(x[None])
    if task.task_name == "semantic_segmentation":
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        label_map = logits.argmax(dim=1)[0].cpu()
        return draw_semantic(raw, label_map, task.num_classes), label_map
    probs = logits.softmax(dim=1)[0].cpu()
    score, label = probs.max(dim=0)
    ids = (task.hparams.get("label_map") or {}).get("ids") or list(range(task.num_classes))
    name = task.class_names[int(label)]
    h, w = size
    box = torch.tensor([[0.0, 0.0, w - 1.0, h - 1.0]])
    picture = draw_detections(raw, box, label[None], score[None], task.class_names)
    return picture, {"label": name, "category_id": int(ids[int(label)]), "score": float(score)}
