"""Which detector: visionkit detectors and ultralytics YOLO (from scratch) side by side, same run.

    PYTHONPATH=. .venv/bin/python bench/bench_realtime.py --budget 120 --threads 2 \
        --candidate "task=detection" --candidate "task=detection experiment=rtdet_n" \
        --yolo yolo26n.yaml

Writes the shapes detection split once (COCO json + PNGs, the generator's detection defaults),
converts it to the YOLO txt layout with ``python -m visionkit convert coco yolo``, then trains
each candidate for the same wall-time budget on the same machine, back to back:

- visionkit: each ``--candidate`` is one override set of ``python -m visionkit train`` (default
  ``task=detection``: the Faster R-CNN default), read through ``data=coco`` from the written split
  (any ``data=`` in the set is replaced). Its epochs are calibrated to the budget from a short
  calibration run (2 epochs of a few training batches, each with the full validation and
  checkpointing: :func:`calibrate`), so the whole schedule fits the budget (the table says how
  many of the planned epochs were trained), and ``trainer.max_time`` caps the training at the
  budget.
- ultralytics: each ``--yolo`` model yaml (no weights: nothing is downloaded) is trained with
  ``time=budget`` (ultralytics re-fits its epochs to the time after the first one) in its own venv
  (``--venv``, created with ``pip install ultralytics`` when missing; it reuses the torch of the
  running interpreter through a .pth file, so only ultralytics and its small dependencies are
  installed there). Offline: YOLO_OFFLINE=1, plots=False, amp=False, its settings in the venv.

Both train with the same image size (the data's 64 px), batch 16, the same torch thread count
(``--threads``; ultralytics would reset it to cores-1, which is patched) and, by default, no
data-loader worker processes (ultralytics uses none on CPU; ``--workers`` gives visionkit some). Test AP50 / AP are computed with pycocotools on the
two detection files (each tool's own detection defaults: visionkit score >= 0.05, at most 100 per
image; YOLO conf >= 0.001, at most 100) against the same test ground truth. Training images/s is
images over the time spent in training batches (data loading between batches excluded, validation
excluded); inference images/s is eval-mode forward with pre- and post-processing (NMS) on decoded
test images in memory, at batch 1 and 16: after all training, the median of ``--infer-rounds``
rounds, each row timed in a fresh process in turn within a round (:func:`infer_rounds`). Ratios are against the first candidate.
Results: bench/results/bench_realtime.md (and bench_realtime.json beside it).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
IMAGE_SIZE = 64
BATCH = 16
CALIBRATION_BATCHES = 16  # training batches per calibration epoch (2 epochs, full validation)
CALIBRATION_MARGIN = 0.08  # timing noise; validation slows as the model learns (more detections)


# -- visionkit side: a callback the training subprocess loads by _target_ ------------------------
try:
    import pytorch_lightning as _pl

    _Callback = _pl.Callback
except ImportError:  # the ultralytics venv's job (it never uses the callback)
    _Callback = object


class BenchMeter(_Callback):
    """Training wall time (train start to end), time in training batches and images, the mean
    training / validation batch time (first batch of each left out), the median training batch
    interval of the last epoch (one batch start to the next: data loading and hooks included), the
    mean gap between epochs (last training batch's end to the next epoch's first batch, or to the
    end of training: validation with its data loading and COCO evaluation, checkpoints, epoch
    hooks) and the start-up (train start to the first batch); written to ``path``. The epoch
    calibration needs the last three."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.images, self.seconds = 0, 0.0
        self.train_times: list[float] = []
        self.val_times: list[float] = []
        self.intervals: list[float] = []
        self.gaps: list[float] = []
        self.start = self.end = 0.0
        self.first_batch: float | None = None
        self._last: float | None = None
        self._last_end: float | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        self.start = time.perf_counter()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._last = None  # an interval across validation is not a batch's
        # the last epoch's intervals: the calibration's first epoch ran slower (rtdet_n 0.13 s a
        # batch vs 0.105 s later: 12 epochs planned where 15 fit); their median: one slow
        # interval in 16 planned Faster R-CNN 3 epochs where 4 fit
        self.intervals = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._t0 = time.perf_counter()
        if self.first_batch is None:
            self.first_batch = self._t0
        if self._last is not None:
            self.intervals.append(self._t0 - self._last)
        elif self._last_end is not None:  # the first batch of a later epoch
            self.gaps.append(self._t0 - self._last_end)
        self._last = self._t0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._last_end = time.perf_counter()
        dt = self._last_end - self._t0
        self.seconds += dt
        self.images += len(batch[0])
        self.train_times.append(dt)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:  # fmt: skip
        self._v0 = time.perf_counter()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:  # fmt: skip
        self.val_times.append(time.perf_counter() - self._v0)

    def on_train_end(self, trainer, pl_module) -> None:
        self.end = time.perf_counter()
        if self._last_end is not None:  # the last epoch's validation and checkpoint
            self.gaps.append(self.end - self._last_end)
        Path(self.path).write_text(
            json.dumps(
                {
                    "images": self.images,
                    "seconds": self.seconds,
                    "wall": self.end - self.start,
                    "epochs": trainer.current_epoch,
                    "train_batch": _mean(self.train_times[1:] or self.train_times),
                    "val_batch": _mean(self.val_times[1:] or self.val_times),
                    "train_interval": statistics.median(self.intervals or [0.0]),
                    "epoch_gap": _mean(self.gaps),
                    "startup": (self.first_batch or self.end) - self.start,
                }
            )
        )


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


# -- the shared split ------------------------------------------------------------------------------
def write_split(work: Path, args: argparse.Namespace) -> tuple[Path, Path]:
    """The shapes detection split as COCO (root/{split}/*.png + annotations/) and YOLO layouts."""
    from visionkit.data.shapes.datamodule import ShapesDataModule

    dm = ShapesDataModule(
        task="detection", root=str(work / "shapes"), image_size=IMAGE_SIZE,
        num_train=args.num_train, num_val=args.num_val, num_test=args.num_test,
    )  # fmt: skip
    dm.prepare_data()
    coco = dm.data_root()
    yolo = work / "yolo"
    if not (yolo / "data.yaml").is_file():
        for split in ("train", "val", "test"):
            # boxes only (the generator's RLE masks have no YOLO form): detection labels
            data = json.loads((coco / "annotations" / f"instances_{split}.json").read_text())
            for ann in data["annotations"]:
                ann.pop("segmentation", None)
            boxes = work / f"boxes_{split}.json"
            boxes.write_text(json.dumps(data))
            cmd = [
                sys.executable, "-m", "visionkit", "convert", "coco", "yolo", "--annotations", str(boxes),
                "--images", str(coco / split), "--output", str(yolo), "--split", split,
            ]  # fmt: skip
            subprocess.run(cmd, check=True, capture_output=True)
            (yolo / "images" / split).mkdir(parents=True, exist_ok=True)
            for png in (coco / split).glob("*.png"):  # hard links (ultralytics resolves symlinks)
                target = yolo / "images" / split / png.name
                if not target.exists():
                    os.link(png, target)
        names = (yolo / "classes.txt").read_text().split()
        data = {
            "path": str(yolo), "train": "images/train", "val": "images/val", "test": "images/test",
            "names": dict(enumerate(names)),
        }  # fmt: skip
        (yolo / "data.yaml").write_text(json.dumps(data))  # JSON is YAML
    return coco, yolo


# -- visionkit candidates --------------------------------------------------------------------------
def _train_cli(overrides: list[str], out: Path, meter: Path, extra: list[str]) -> list[str]:
    kept = [o for o in overrides if not o.startswith(("data=", "data.", "+data"))]
    return [
        sys.executable, "-m", "visionkit", "train", *kept, *extra,
        f"hydra.run.dir={out}", "trainer.accelerator=cpu", "callbacks.progress=null",
        "+callbacks.meter._target_=bench_realtime.BenchMeter", f"+callbacks.meter.path={meter}",
    ]  # fmt: skip


def run_visionkit(cand: str, coco: Path, work: Path, args: argparse.Namespace, env: dict) -> dict:
    """Calibrate epochs to the budget, train, test; the run's files and timings."""
    overrides = shlex.split(cand)
    # a folder name Hydra reads as a plain string (an override such as model.norm={name:bn,...}
    # would make hydra.run.dir a dict)
    slug = "vk_" + re.sub(r"[^A-Za-z0-9._-]", "-", "_".join(overrides))[:60]
    data = [
        "data=coco", f"data.root={coco}", f"data.image_size={IMAGE_SIZE}", f"data.batch_size={BATCH}",
        f"data.num_workers={args.workers}", "data.verify_images=none",
    ]  # fmt: skip
    epochs = args.epochs
    if epochs is None:
        epochs = calibrate(overrides, slug, data, work, args, env)
    out, meter = work / slug, work / f"{slug}.json"
    limit = time.strftime("%H:%M:%S", time.gmtime(args.budget))
    cmd = _train_cli(overrides, out, meter, [*data, f"trainer.max_epochs={epochs}", f"+trainer.max_time='00:{limit}'"])  # fmt: skip
    print("+", shlex.join(cmd), flush=True)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"visionkit run failed ({cand}):\n{proc.stderr[-3000:]}")
    results = json.loads((out / "results.json").read_text())
    m = json.loads(meter.read_text())
    return {
        "name": f"visionkit `{cand}`",
        "kind": "visionkit",
        "model": results["best_checkpoint"],
        "detections": results["test/detections"],
        "epochs": f"{m['images'] / args.num_train:.1f} of {epochs}",  # trained of planned (max_time cuts)
        "wall": m["wall"],
        "train_rate": m["images"] / max(m["seconds"], 1e-9),
        "command": shlex.join(cmd),
    }


def calibrate(overrides: list[str], slug: str, data: list[str], work: Path, args: argparse.Namespace, env: dict) -> int:  # fmt: skip
    """The number of epochs whose whole schedule fits the budget, from a short run: 2 epochs of
    ``CALIBRATION_BATCHES`` training batches, each with the full validation and checkpointing.

    An epoch costs its training batch intervals (data loading included: ~25 % of rtdet's epoch)
    plus the gap to the next epoch (validation with its loading and COCO evaluation, checkpoints:
    ~1.5 s of rtdet_n's ~13 s, ~4.5 s of Faster R-CNN's ~52 s). Counting validation batches alone
    missed the rest: the last quiet run planned 20 epochs of rtdet_n and 5 of Faster R-CNN,
    ``max_time`` stopped them after 18.3 and 4.7, so neither cosine schedule annealed."""
    cal_out, cal_meter = work / f"{slug}_calibrate", work / f"{slug}_calibrate.json"
    cal = _train_cli(overrides, cal_out, cal_meter, [*data, "trainer.max_epochs=2",
        f"trainer.limit_train_batches={CALIBRATION_BATCHES}", "test_after_fit=false"])  # fmt: skip
    subprocess.run(cal, check=True, env=env, capture_output=True)
    return planned_epochs(json.loads(cal_meter.read_text()), args.budget, -(-args.num_train // BATCH))  # fmt: skip


def planned_epochs(meter: dict, budget: float, batches: int) -> int:
    """Whole epochs of ``batches`` training batches that fit ``budget`` seconds by a calibration
    run's meter: (budget - start-up) / (batches * batch interval + epoch gap), with a
    ``CALIBRATION_MARGIN`` for noise (at least 1)."""
    epoch_s = meter["train_interval"] * batches + meter["epoch_gap"]
    return max(1, int((budget - meter["startup"]) / (epoch_s * (1 + CALIBRATION_MARGIN))))


def test_images(coco: Path, limit: int | None = None) -> list[Path]:
    data = json.loads((coco / "annotations" / "instances_test.json").read_text())
    files = [coco / "test" / im["file_name"] for im in data["images"]]
    return files[:limit] if limit else files


def visionkit_infer_job(path: str) -> None:
    """Eval-mode images/s of a checkpoint's task on decoded test images, batch 1 and 16 (one
    round of :func:`infer_rounds`, in a fresh process); writes job['out']."""
    job = json.loads(Path(path).read_text())
    import torch
    from PIL import Image
    from torchvision.transforms.functional import pil_to_tensor

    import visionkit

    torch.set_num_threads(job["threads"])
    # the model as predict runs it (BatchNorms folded, channels-last on CPU)
    task = visionkit.load(job["model"]).task
    images = [pil_to_tensor(Image.open(p).convert("RGB")).float() / 255 for p in job["images"]]  # fmt: skip
    with torch.no_grad():
        task(images[:BATCH])  # warm-up
        rates = timed_batches(task, images)
    Path(job["out"]).write_text(json.dumps(rates))


def timed_batches(predict, images: list) -> dict[int, float]:
    """Images/s of ``predict`` over ``images`` in batches of 1 and of BATCH (one pass each)."""
    rates = {}
    for bs in (1, BATCH):
        start = time.perf_counter()
        for i in range(0, len(images), bs):
            predict(images[i : i + bs])
        rates[bs] = len(images) / (time.perf_counter() - start)
    return rates


def infer_rounds(rows: list[dict], coco: Path, work: Path, args: argparse.Namespace, python: Path, env: dict) -> None:  # fmt: skip
    """Each row's inference images/s at batch 1 and 16: ``--infer-rounds`` rounds, every row timed
    once per round in a fresh process (its own venv for YOLO), rows in turn within a round, so a
    busy moment hits one round of every row; each figure is the median of its rounds. One pass
    after each training run was noisy: rtdet_n vs YOLO26n at batch 16 gave 792 vs 780 in one
    quiet run and 917-946 vs 830-855 when timed again on the same checkpoints."""
    images = [str(p) for p in test_images(coco, args.infer_images)]
    for row in rows:
        row["infer_rounds"] = {1: [], BATCH: []}
    for r in range(args.infer_rounds):
        for i, row in enumerate(rows):
            path, out = work / f"infer_{i}.json", work / f"infer_{i}_out.json"
            path.write_text(json.dumps({"model": row["model"], "images": images, "threads": args.threads, "imgsz": IMAGE_SIZE, "out": str(out)}))  # fmt: skip
            if row["kind"] == "yolo":
                cmd, job_env = [str(python), __file__, "--yolo-infer-job", str(path)], yolo_env(python, args)  # fmt: skip
            else:
                cmd, job_env = [sys.executable, __file__, "--infer-job", str(path)], env
            proc = subprocess.run(cmd, env=job_env, capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"inference job failed ({row['name']}):\n{proc.stderr[-3000:]}")
            for bs, rate in json.loads(out.read_text()).items():
                row["infer_rounds"][int(bs)].append(rate)
        print(f"inference round {r + 1}: " + "; ".join(f"{row['name']}: {row['infer_rounds'][1][-1]:.0f} / {row['infer_rounds'][BATCH][-1]:.0f}" for row in rows), flush=True)  # fmt: skip
    for row in rows:
        row["infer"] = {bs: statistics.median(v) for bs, v in row["infer_rounds"].items()}


# -- ultralytics (its own venv; the job runs this file there, without visionkit) ---------------------
def ensure_venv(venv: Path) -> Path:
    """``venv``/bin/python with ultralytics, the running interpreter's torch shared via a .pth."""
    python = venv / "bin" / "python"
    if python.exists() and subprocess.run([str(python), "-c", "import ultralytics"], capture_output=True).returncode == 0:  # fmt: skip
        return python
    import sysconfig

    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], check=True, capture_output=True, text=True).stdout.strip()  # fmt: skip
    Path(site, "bench_shared_torch.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "-q", "ultralytics"], check=True)
    return python


def run_yolo(model: str, yolo: Path, coco: Path, work: Path, args: argparse.Namespace, python: Path) -> dict:  # fmt: skip
    """Train and test one ultralytics model in its venv (this file's --yolo-job)."""
    cats = sorted(json.loads((coco / "annotations" / "instances_test.json").read_text())["categories"], key=lambda c: c["id"])  # fmt: skip
    job = {
        "model": model,
        "data": str(yolo / "data.yaml"),
        "project": str(work / "yolo_runs"),
        "name": Path(model).stem,
        "budget": args.budget,
        "threads": args.threads,
        "workers": args.workers,
        "imgsz": IMAGE_SIZE,
        "batch": BATCH,
        "test_images": [str(p) for p in test_images(coco)],
        "test_ids": [
            im["id"]
            for im in json.loads((coco / "annotations" / "instances_test.json").read_text())[
                "images"
            ]
        ],
        "category_ids": [c["id"] for c in cats],
        "out": str(work / f"yolo_{Path(model).stem}.json"),
        "detections": str(work / f"yolo_{Path(model).stem}_detections.json"),
    }
    path = work / f"yolo_{Path(model).stem}_job.json"
    path.write_text(json.dumps(job))
    cmd = [str(python), __file__, "--yolo-job", str(path)]
    print("+", shlex.join(cmd), flush=True)
    proc = subprocess.run(cmd, env=yolo_env(python, args), capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"ultralytics run failed ({model}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")  # fmt: skip
    r = json.loads(Path(job["out"]).read_text())
    return {
        "name": f"ultralytics `{model}` from scratch",
        "kind": "yolo",
        "model": r["weights"],
        "detections": job["detections"],
        "epochs": r["epochs"],
        "wall": r["wall"],
        "train_rate": r["images"] / max(r["seconds"], 1e-9),
        "command": f"YOLO('{model}').train(data=..., imgsz={IMAGE_SIZE}, batch={BATCH}, time={args.budget}/3600, workers={args.workers}, device='cpu', amp=False, plots=False, pretrained=False, seed=0)",
    }


def yolo_env(python: Path, args: argparse.Namespace) -> dict:
    """The ultralytics venv's environment: offline, its own settings, ``--threads`` threads."""
    return {
        **os.environ, "YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(Path(python).parents[1] / "config"),
        "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": "",
    }  # fmt: skip


def yolo_job(path: str) -> None:
    """In the ultralytics venv: train from the yaml for the time budget, detect on the test images
    (COCO results); writes job['out'] (timings, the best weights' path) and job['detections'].
    Inference is timed later, by :func:`yolo_infer_job` in :func:`infer_rounds`."""
    job = json.loads(Path(path).read_text())
    import torch
    from ultralytics import YOLO
    from ultralytics.utils import SETTINGS, torch_utils

    # offline, and no experiment trackers (the shared torch's site-packages hold mlflow)
    SETTINGS.update({k: False for k in ("sync", "mlflow", "clearml", "comet", "dvc", "raytune", "tensorboard", "wandb") if k in SETTINGS})  # fmt: skip
    torch_utils.NUM_THREADS = job["threads"]  # select_device would reset threads to cores - 1
    torch.set_num_threads(job["threads"])
    meter = {"seconds": 0.0, "images": 0, "batches": 0, "epochs": 0}

    def batch_start(trainer) -> None:
        meter["t0"] = time.perf_counter()

    def batch_end(trainer) -> None:
        meter["seconds"] += time.perf_counter() - meter.pop("t0")
        meter["batches"] += 1

    def epoch_end(trainer) -> None:  # the last batch of an epoch may be short
        if "t0" in meter:  # the batch that ran out of time breaks before on_train_batch_end
            batch_end(trainer)
        meter["images"] += min(meter["batches"] * trainer.batch_size, len(trainer.train_loader.dataset))  # fmt: skip
        meter["batches"] = 0
        meter["epochs"] += 1

    def train_start(trainer) -> None:
        torch.set_num_threads(job["threads"])
        meter["start"] = time.perf_counter()

    def train_end(trainer) -> None:
        meter["wall"] = time.perf_counter() - meter["start"]

    model = YOLO(job["model"])  # a yaml: built from scratch, no weights
    for event, fn in (("on_train_batch_start", batch_start), ("on_train_batch_end", batch_end), ("on_train_epoch_end", epoch_end), ("on_train_start", train_start), ("on_train_end", train_end)):  # fmt: skip
        model.add_callback(event, fn)
    model.train(
        data=job["data"], imgsz=job["imgsz"], batch=job["batch"], epochs=1000,
        time=job["budget"] / 3600, workers=job["workers"], device="cpu", amp=False, plots=False,
        pretrained=False, seed=0, deterministic=False, project=job["project"], name=job["name"],
        exist_ok=True, verbose=False,
    )  # fmt: skip
    best = Path(job["project"]) / job["name"] / "weights" / "best.pt"
    model = YOLO(str(best))
    records = []
    results = _predict(model, job["test_images"], job, job["batch"])
    for image_id, result in zip(job["test_ids"], results, strict=True):
        boxes = result.boxes
        for (x1, y1, x2, y2), score, cls in zip(boxes.xyxy.tolist(), boxes.conf.tolist(), boxes.cls.tolist(), strict=True):  # fmt: skip
            records.append({
                "image_id": image_id, "category_id": job["category_ids"][int(cls)],
                "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score,
            })  # fmt: skip
    Path(job["detections"]).write_text(json.dumps(records))
    Path(job["out"]).write_text(json.dumps({
        "wall": meter["wall"], "seconds": meter["seconds"], "images": meter["images"],
        "epochs": meter["epochs"], "weights": str(best),
    }))  # fmt: skip


def yolo_infer_job(path: str) -> None:
    """In the ultralytics venv: images/s of the trained weights on decoded test images, batch 1
    and 16 (one round of :func:`infer_rounds`); writes job['out']."""
    job = json.loads(Path(path).read_text())
    import cv2
    import torch
    from ultralytics import YOLO
    from ultralytics.utils import torch_utils

    torch_utils.NUM_THREADS = job["threads"]
    model = YOLO(job["model"])
    images = [cv2.imread(p) for p in job["images"]]
    _predict(model, images[:BATCH], job)  # warm-up (and the predictor's setup)
    torch.set_num_threads(job["threads"])
    Path(job["out"]).write_text(json.dumps(timed_batches(lambda batch: _predict(model, batch, job), images)))  # fmt: skip


def _predict(model, sources: list, job: dict, batch: int | None = None) -> list:
    """ultralytics' predictor (letterbox, forward, NMS-free or NMS post-processing)."""
    return model.predict(sources, imgsz=job["imgsz"], conf=0.001, max_det=100, batch=batch or len(sources), device="cpu", verbose=False)  # fmt: skip


# -- evaluation and the table ---------------------------------------------------------------------
def coco_ap(gt_file: Path, detections: str) -> tuple[float, float]:
    """(AP50, AP) of a COCO results file on the ground truth, by pycocotools."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_file))
        records = json.loads(Path(detections).read_text())
        if not records:
            return 0.0, 0.0
        ev = COCOeval(gt, gt.loadRes(records), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[1]), float(ev.stats[0])


def main() -> None:
    jobs = {"--yolo-job": yolo_job, "--yolo-infer-job": yolo_infer_job, "--infer-job": visionkit_infer_job}  # fmt: skip
    if len(sys.argv) == 3 and sys.argv[1] in jobs:
        jobs[sys.argv[1]](sys.argv[2])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidate", action="append", help="visionkit override set (repeatable; default: 'task=detection')")  # fmt: skip
    parser.add_argument("--yolo", action="append", help="ultralytics model yaml (repeatable; default: yolo26n.yaml)")  # fmt: skip
    parser.add_argument("--budget", type=int, default=120, help="training seconds for each")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for each")
    parser.add_argument("--workers", type=int, default=0, help="visionkit data-loader workers (ultralytics uses none on CPU)")  # fmt: skip
    parser.add_argument("--epochs", type=int, help="visionkit epochs (default: calibrated to --budget)")  # fmt: skip
    parser.add_argument("--num-train", type=int, default=2000)
    parser.add_argument("--num-val", type=int, default=400)
    parser.add_argument("--num-test", type=int, default=400)
    parser.add_argument("--infer-images", type=int, default=160, help="test images timed for inference")  # fmt: skip
    parser.add_argument("--infer-rounds", type=int, default=5, help="inference rounds (each figure their median)")  # fmt: skip
    parser.add_argument("--venv", type=Path, default=Path("/tmp/yolo-venv"), help="ultralytics venv (created if missing)")  # fmt: skip
    parser.add_argument("--work", type=Path, help="working folder (default: a new temporary one)")
    parser.add_argument("--name", default="bench_realtime", help="results file name")
    args = parser.parse_args()
    candidates = args.candidate or ["task=detection"]
    models = args.yolo or ["yolo26n.yaml"]
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_realtime_"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    coco, yolo = write_split(work, args)
    python = ensure_venv(args.venv)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(BENCH), os.environ.get("PYTHONPATH", str(ROOT))])}  # fmt: skip
    load = [os.getloadavg()[0]]
    rows = [run_visionkit(c, coco, work, args, env) for c in candidates]
    rows += [run_yolo(m, yolo, coco, work, args, python) for m in models]
    infer_rounds(rows, coco, work, args, python, env)
    load.append(os.getloadavg()[0])
    gt = coco / "annotations" / "instances_test.json"
    for r in rows:
        r["ap50"], r["ap"] = coco_ap(gt, r["detections"])
    ref = rows[0]

    def ratio(a: float, b: float) -> str:
        return f"{a / b:.2f}" if b else "-"

    table = []
    for r in rows:
        table.append([
            r["name"], f"{r['wall']:.0f}", r["epochs"], f"{r['ap50']:.3f} / {r['ap']:.3f}",
            f"{ratio(r['ap50'], ref['ap50'])} / {ratio(r['ap'], ref['ap'])}",
            f"{r['train_rate']:.1f}", ratio(r["train_rate"], ref["train_rate"]),
            f"{r['infer'][1]:.1f} / {r['infer'][BATCH]:.1f}",
            f"{ratio(r['infer'][1], ref['infer'][1])} / {ratio(r['infer'][BATCH], ref['infer'][BATCH])}",
        ])  # fmt: skip
    header = ["detector", "train wall s", "epochs", "test AP50 / AP", "AP50 / AP ratio", "train img/s", "ratio", f"infer img/s batch 1 / {BATCH}", "ratio"]  # fmt: skip
    from common import write_table

    cmd = "PYTHONPATH=. python bench/bench_realtime.py " + " ".join(sys.argv[1:])
    notes = (
        f"Shapes detection ({args.num_train} train / {args.num_val} val / {args.num_test} test images, "
        f"{IMAGE_SIZE} px, batch {BATCH}), each trained for a {args.budget} s budget back to back in one "
        f"run, {args.threads} torch threads each, {args.workers} data-loader workers for visionkit and "
        f"none for ultralytics (it uses none on CPU) (torch "
        f"{torch.__version__}, {os.cpu_count()} cores). AP by pycocotools on each detection file over "
        f"the same {args.num_test} test images; inference on {args.infer_images} decoded test images "
        f"(pre/post-processing and NMS included), the median of {args.infer_rounds} rounds after all "
        "training, each row in a fresh process in turn within a round. Ratios are against the first row. The machine is "
        "shared with other jobs: absolute figures are noisy, only the ratios within one run count "
        f"(1-minute load average {load[0]:.1f} at the start, {load[1]:.1f} at the end).\n\n"
        f"Command: `{cmd}`\n\n" + "\n".join(f"- {r['name']}: `{r['command']}`" for r in rows)
    )
    write_table(
        args.name, "Which detector: equal wall time on shapes, same run", header, table, notes
    )
    (BENCH / "results" / f"{args.name}.json").write_text(json.dumps(rows, indent=1, default=str))


if __name__ == "__main__":
    main()
