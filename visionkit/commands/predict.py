"""``python -m visionkit predict ckpt_path=... input=<image or folder>``: predictions as pictures.

``ckpt_path`` is a checkpoint or an exported file (``visionkit.load``); the preprocessing and label
map come from it. Images of any size and mode are read by ``num_workers`` loader processes and
predicted ``batch_size`` at a time through the task's ``predict_step`` (one path for every task).

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

from omegaconf import DictConfig

from visionkit import runner
from visionkit.errors import ConfigError


def find_images(source: str | Path, recursive: bool = True) -> tuple[Path, list[Path], list[Path]]:
    """(root, image files sorted by path, files skipped) of ``source``: a file or a folder (with
    its sub-folders when ``recursive``); the images the datamodules accept. Files of run
    directories (a sub-folder holding ``.hydra/``, e.g. an earlier predict's) are skipped too."""
    from visionkit.data.folders.reader import IMAGE_EXTENSIONS, list_images

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
    """Predict every input image with the model of ``ckpt_path`` (a checkpoint or an exported
    file), in batches read by loader workers; returns a summary of the files written."""
    if not cfg.get("ckpt_path"):
        raise ConfigError("predict needs a checkpoint: add ckpt_path=<path to .ckpt or exported file>")  # fmt: skip
    root, files, others = find_images(cfg.input, bool(cfg.get("recursive", True)))
    out = runner.setup(cfg, model_file=True)  # its path checks run before torch is imported
    import torch

    from visionkit.inference import load
    from visionkit.overlays import save_png
    from visionkit.predictions import Classification, Detections, SemanticMap

    model = load(cfg.ckpt_path)
    if cfg.get("tta"):  # test-time augmentation wraps the task's forward (checkpoints only)
        from visionkit.tta import enable_tta

        if model.task is None:
            raise ConfigError(f"tta needs a checkpoint; {cfg.ckpt_path} is an exported model (config keys tta, ckpt_path)")  # fmt: skip
        enable_tta(model.task, cfg.get("tta"))
    names = output_names(files, root)
    score_thresh = cfg.get("score_thresh")
    batches = model.batches(files, int(cfg.get("batch_size") or 1), int(cfg.get("num_workers") or 0), keep_raw=True)  # fmt: skip
    pictures, images, records, labels = [], [], [], []
    for batch, results in batches:
        for result, i, raw in zip(results, batch["index"], batch["raw"], strict=True):
            path = files[i]
            overlay = PurePosixPath("predictions") / names[path]
            kwargs = {"score_thresh": float(score_thresh)} if score_thresh is not None and isinstance(result, Detections) else {}  # fmt: skip
            pictures.append(save_png(result.draw(raw, **kwargs), out / overlay))
            h, w = raw.shape[-2:]
            file_name = path.relative_to(root).as_posix()
            image = {"id": i + 1, "file_name": file_name, "height": int(h), "width": int(w), "overlay": str(overlay)}  # fmt: skip
            if isinstance(result, SemanticMap):  # class index per pixel, beside the overlays
                image["labels"] = str(PurePosixPath("labels") / names[path])
                save_png(result.indices.to(torch.uint8)[None].expand(3, -1, -1), out / image["labels"])  # fmt: skip
            elif isinstance(result, Classification):
                labels.append({"file_name": file_name, **result.to_dict()})
            else:
                records.extend(result.to_coco(i + 1))
            images.append(image)
    (out / "images.json").write_text(json.dumps(images, indent=1))
    summary: dict[str, Any] = {"images": len(files), "pictures": pictures, "index": str(out / "images.json")}  # fmt: skip
    if labels:
        (out / "predictions.json").write_text(json.dumps(labels, indent=1))
        summary["predictions"] = str(out / "predictions.json")
    elif model.task_name in ("detection", "instance_segmentation"):
        from visionkit.evaluation.coco_results import write_results

        write_results(out / "detections.json", records)  # atomic, like test's detections.json
        summary["detections"] = str(out / "detections.json")
    skipped = f" ({len(others)} other files skipped: not images, or in a run folder)" if others else ""  # fmt: skip
    print(f"predict: {len(files)} images of {root} -> {out / 'predictions'}{skipped}")
    return summary
