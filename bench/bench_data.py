"""Data-pipeline throughput: visionkit datamodules vs a plain torchvision pipeline doing the same
work (decode PNG, same v2 augmentations, float conversion, collate) on the same files.

Rows: classification (shapes 64 px, resize + hflip + normalise) and detection with instance masks
(shapes 128 px, 1-4 objects, hflip + sanitize + to float), each with num_workers 0 and 2. Ratio =
visionkit images/s / reference images/s (>= 0.9 is the target). Best of ``REPEATS`` epochs each.
Run: ``.venv/bin/python bench/bench_data.py``; writes bench/results/bench_data.md.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import tv_tensors
from torchvision.transforms import v2

from visionkit.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from visionkit.plugins import load_builtins
from visionkit.registries import DATASETS

REPEATS = 2
BATCH = 32
CLS = {"image_size": 64, "num_train": 600, "num_val": 10, "num_test": 0}
DET = {"image_size": 128, "num_train": 200, "num_val": 10, "num_test": 0, "max_objects": 4}


class PlainClassification(torch.utils.data.Dataset):
    """Reference: PIL decode -> tensor -> v2 resize/hflip/float/normalise."""

    def __init__(self, files: list[Path], labels: list[int], size: int) -> None:
        self.files, self.labels = files, labels
        self.t = v2.Compose([
            v2.Resize([size, size], antialias=True), v2.RandomHorizontalFlip(),
            v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ])  # fmt: skip

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        with Image.open(self.files[i]) as im:
            arr = np.asarray(im.convert("RGB"))
        img = torch.from_numpy(arr).permute(2, 0, 1).contiguous()
        return self.t(tv_tensors.Image(img)), self.labels[i]


class PlainDetection(torch.utils.data.Dataset):
    """Reference: pycocotools COCO + annToMask -> tv_tensors -> v2 hflip/sanitize/float."""

    def __init__(self, ann_file: Path, image_dir: Path) -> None:
        from pycocotools.coco import COCO

        self.coco = COCO(str(ann_file))
        self.ids = sorted(self.coco.getImgIds())
        self.dir = image_dir
        cats = sorted(self.coco.getCatIds())
        self.index = {c: i for i, c in enumerate(cats)}
        self.t = v2.Compose([
            v2.RandomHorizontalFlip(), v2.ClampBoundingBoxes(), v2.SanitizeBoundingBoxes(),
            v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
        ])  # fmt: skip

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int):
        info = self.coco.loadImgs(self.ids[i])[0]
        with Image.open(self.dir / info["file_name"]) as im:
            arr = np.asarray(im.convert("RGB"))
        h, w = arr.shape[:2]
        anns = self.coco.loadAnns(self.coco.getAnnIds(imgIds=info["id"]))
        boxes = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                               a["bbox"][1] + a["bbox"][3]] for a in anns], dtype=torch.float32)  # fmt: skip
        masks = torch.from_numpy(np.stack([self.coco.annToMask(a) for a in anns]))
        target = {
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(h, w)),
            "labels": torch.tensor([self.index[a["category_id"]] for a in anns]),
            "masks": tv_tensors.Mask(masks),
            "iscrowd": torch.tensor([a["iscrowd"] for a in anns]),
            "image_id": info["id"],
        }
        img = tv_tensors.Image(torch.from_numpy(arr).permute(2, 0, 1).contiguous())
        return self.t(img, target)


def _list_collate(batch):
    return [b[0] for b in batch], [b[1] for b in batch]


def _rate(loader: DataLoader) -> float:
    best = 0.0
    for _ in range(REPEATS):
        start, n = time.perf_counter(), 0
        for images, _ in loader:
            n += len(images)
        best = max(best, n / (time.perf_counter() - start))
    return best


def main() -> str:
    load_builtins()
    torch.set_num_threads(1)
    root = Path(os.environ.get("VISIONKIT_DATA_DIR", tempfile.gettempdir())) / "bench-shapes"
    rows = []
    for task, params in (("classification", CLS), ("instance_segmentation", DET)):
        for workers in (0, 2):
            dm = DATASETS.build({"name": "shapes", "root": str(root), **params,
                                 "num_workers": workers, "batch_size": BATCH,
                                 "persistent_workers": workers > 0}, task=task)  # fmt: skip
            dm.prepare_data()
            dm.setup("fit")
            ours = dm.train_dataloader()
            split_dir = dm.data_root() / "train"
            if task == "classification":
                recs = dm.datasets["train"].records
                ref_ds = PlainClassification(
                    [r.path for r in recs],
                    [dm.label_map.to_index(r.anns[0]["category_id"]) for r in recs],
                    params["image_size"],
                )
                ref = DataLoader(ref_ds, BATCH, shuffle=True, num_workers=workers,
                                 persistent_workers=workers > 0)  # fmt: skip
            else:
                ref_ds = PlainDetection(dm.annotation_file("train"), split_dir)
                ref = DataLoader(ref_ds, BATCH, shuffle=True, num_workers=workers,
                                 collate_fn=_list_collate, persistent_workers=workers > 0)  # fmt: skip
            for loader in (ours, ref):  # warm-up: worker start, page cache
                next(iter(loader))
            r_ours, r_ref = _rate(ours), _rate(ref)
            r_ours, r_ref = max(r_ours, _rate(ours)), max(r_ref, _rate(ref))  # interleaved
            rows.append((task, workers, r_ours, r_ref))
            print(f"{task} workers={workers}: visionkit {r_ours:.0f}/s, reference {r_ref:.0f}/s",
                  flush=True)  # fmt: skip
    lines = [
        "| pipeline | num_workers | visionkit img/s | reference img/s | ratio |",
        "|---|---|---|---|---|",
        *(f"| {t} | {w} | {a:.0f} | {b:.0f} | {a / b:.2f} |" for t, w, a, b in rows),
    ]
    table = "\n".join(lines)
    note = (
        "\n\nReference: plain PIL decode + the same torchvision v2 transforms (+ pycocotools "
        "annToMask for masks), same files, same batch size, same process. Best of "
        f"{2 * REPEATS} epochs each, interleaved. Machine: {os.cpu_count()} CPU cores (shared).\n"
    )
    out = Path(__file__).resolve().parent / "results" / "bench_data.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("# bench_data: dataset + train transforms throughput\n\n" + table + note)
    print(table)
    return table


if __name__ == "__main__":
    main()
