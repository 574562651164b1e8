"""``python -m visionkit predict ckpt_path=... input=<image or folder>``: predictions as pictures.

Writes ``predictions/<name>.png`` overlays (boxes with class names and scores, masks coloured,
semantic maps blended) for every image of any size and mode; detection tasks also write
``detections.json`` (COCO results, the dataset's category ids) and ``images.json`` (the image ids
it uses), semantic segmentation ``predictions/<name>_labels.png`` (class index per pixel),
classification ``predictions.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from visionkit import runner
from visionkit.errors import ConfigError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def find_images(source: str | Path, recursive: bool = False) -> list[Path]:
    """The image files of ``source`` (a file, or a folder's images sorted by name)."""
    path = Path(source).expanduser()
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise ConfigError(f"predict: input '{source}' is neither an image file nor a folder (config key input)")  # fmt: skip
    pattern = "**/*" if recursive else "*"
    files = sorted(p for p in path.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)  # fmt: skip
    if not files:
        raise ConfigError(f"predict: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {path}")
    return files


def run(cfg: DictConfig) -> dict[str, Any]:
    """Predict every input image with the checkpoint's task; returns a summary of files written."""
    from visionkit.data.images import load_image
    from visionkit.overlays import save_png
    from visionkit.registries import DATASETS

    if not cfg.get("ckpt_path"):
        raise ConfigError("predict needs a checkpoint: add ckpt_path=<path to .ckpt>")
    files = find_images(cfg.input, bool(cfg.get("recursive", False)))
    out = runner.setup(cfg)
    task = runner.load_task_from_checkpoint(cfg.ckpt_path).eval()
    dm = DATASETS.build(cfg.data, task=task.task_name)  # preprocessing only: no files are read
    if cfg.get("score_thresh") is not None and hasattr(task, "overlay_score_thresh"):
        task.overlay_score_thresh = float(cfg.score_thresh)
    pictures, records, images, labels = [], [], [], []
    pred_dir = out / "predictions"
    with torch.no_grad():
        for index, path in enumerate(files, start=1):
            raw = load_image(path)
            x = dm.eval_transform(raw)
            picture, extra = _predict_one(task, raw, x, index)
            pictures.append(save_png(picture, pred_dir / f"{path.stem}.png"))
            h, w = raw.shape[-2:]
            images.append({"id": index, "file_name": str(path), "height": int(h), "width": int(w)})
            if task.task_name in ("detection", "instance_segmentation"):
                records.extend(extra)
            elif task.task_name == "semantic_segmentation":
                save_png(extra.to(torch.uint8)[None].expand(3, -1, -1), pred_dir / f"{path.stem}_labels.png")  # fmt: skip
            else:
                labels.append({"file_name": str(path), **extra})
    summary: dict[str, Any] = {"images": len(files), "pictures": pictures}
    if task.task_name in ("detection", "instance_segmentation"):
        from visionkit.evaluation.coco import write_results

        write_results(out / "detections.json", records)  # atomic, like test's detections.json
        (out / "images.json").write_text(json.dumps(images, indent=1))
        summary["detections"] = str(out / "detections.json")
    elif task.task_name == "classification":
        (out / "predictions.json").write_text(json.dumps(labels, indent=1))
        summary["predictions"] = str(out / "predictions.json")
    print(f"predict: {len(files)} images -> {pred_dir}")
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
