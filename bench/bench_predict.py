"""Prediction speed per task: one image at a time vs batched, eager PyTorch vs onnxruntime, and
what visionkit adds on top of the model.

    .venv/bin/python bench/bench_predict.py [--images 400] [--tasks classification ...] [--threads 2] [--repeats 3]

Each task's default model (conf/, shapes preprocessing, untrained weights: speed only) predicts
the same N PNG pictures of mixed sizes through ``visionkit.load(...).predict``: one call per image,
then batches of 32 (decoding in the main process), then the exported ONNX file through onnxruntime
in the same batches. Same preprocessing and the same typed results in every row (the export checks
itself against the eager model; onnxruntime runs each batch through one session with ``--threads``
intra-op threads). The reference is a plain loop without visionkit's predict path (decode, the recorded
preprocessing, the model on one image and its result; before the result was in it, semantic
segmentation's one call per image ran 1.28x its time): one call per image / plain loop is
visionkit's own per-call cost. One call per image is timed with 1 thread too: at batch 1 a second
intra-op thread mostly waits (and on a shared machine waits long). Threads: 2 unless said.
Each figure is the median of ``--repeats`` rounds, the rows timed in turn within a round (one
pass each was noisy: classification's ratios moved 1.2-2.6x between two quiet runs); each ratio is
the median of the rounds' ratios of two rows timed one after the other (:func:`round_ratio`).
Ratios are against rows of the same run, since the machine may be shared.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import compose, write_table

TASKS = ["classification", "semantic_segmentation", "detection", "instance_segmentation"]
BATCH = 32


def pictures(root: Path, n: int) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        w, h = (int(v) for v in rng.integers(48, 129, 2))
        path = root / f"{i:04d}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def build(task_name: str, out: Path) -> Path:
    """The task's default model (shapes data's label map and preprocessing) as a checkpoint."""
    from types import SimpleNamespace

    from visionkit import runner
    from visionkit.data.labels import LabelMap
    from visionkit.registries import DATASETS

    cfg = compose([f"task={task_name}"])
    dm = DATASETS.build(cfg.data, task=task_name)
    label_map = LabelMap([f"c{i}" for i in range(6)], list(range(1, 7)))
    if task_name == "semantic_segmentation":
        label_map = label_map.with_background()
    fake = SimpleNamespace(num_classes=label_map.num_classes, label_map=label_map, preprocessing=dm.preprocessing)  # fmt: skip
    torch.manual_seed(
        0
    )  # the same weights in every run: the export check meets the same detections
    task = runner.build_task(cfg, fake).eval()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.deploy_models import save

    return save(task, out / f"{task_name}.ckpt")


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def rounds(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Seconds of each of ``fns`` per round, timed in turn ``repeats`` times (so a busy moment of
    a shared machine hits one round of every row rather than all rounds of one row)."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(timed(fn))
    return times


def round_ratio(slow: list[float], fast: list[float]) -> float:
    """Median over rounds of ``slow / fast`` seconds, each ratio from two rows timed one after the
    other: this virtual machine switches between a fast and a ~1.4x slower mode for seconds at a
    time, which moves a ratio of medians taken from different rounds, not a ratio within one."""
    return statistics.median(s / f for s, f in zip(slow, fast, strict=True))


def one_thread(fn: Callable[[], object]) -> Callable[[], object]:
    """``fn`` run with 1 intra-op thread (the thread count restored after)."""

    def run() -> object:
        from visionkit.inference import torch_threads

        with torch_threads(1):
            return fn()

    return run


def plain_loop(model, paths: list[Path]) -> None:
    """Decode, preprocess, run the model and turn its output into the result (the task's
    ``decode``: semantic segmentation's per-pixel resize to the original size and softmax is most
    of its time beyond the model) one image at a time, outside visionkit's predict path (no
    loader, no batching of lists): the reference for its per-call cost."""
    from visionkit.data.images import load_image

    options = model.decode_options()
    with torch.inference_mode():
        for path in paths:
            raw = load_image(path)
            outputs = model.task.predict_outputs([model.preprocess.to_input(raw)])
            model.task_cls.decode(outputs, [tuple(raw.shape[-2:])], model.label_map, options)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--tasks", nargs="*", default=TASKS)
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads (torch and onnxruntime)")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=5, help="rounds; each figure is their median")  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import visionkit
    from visionkit import export

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = pictures(root, args.images)
        for task_name in args.tasks:
            ckpt = build(task_name, root)
            eager = visionkit.load(ckpt)
            report = export.export(eager.task, "onnx", root / task_name / "model.onnx", paths[:3])
            onnx = export.load_exported(root / task_name / "model.onnx", threads=args.threads)
            eager.predict(paths[:4], batch_size=4)  # warm-up
            onnx.predict(paths[:4], batch_size=4)
            one = lambda m=eager: [m.predict(p) for p in paths]  # noqa: E731
            t = rounds(
                {
                    "plain": lambda m=eager: plain_loop(m, paths),
                    "single": one,
                    "batched": lambda m=eager: m.predict(paths, batch_size=BATCH),
                    "ort": lambda m=onnx: m.predict(paths, batch_size=BATCH),
                    "single_1": one_thread(one),
                },
                args.repeats,
            )
            plain, single, batched, ort, single_1 = (statistics.median(t[k]) for k in ("plain", "single", "batched", "ort", "single_1"))  # fmt: skip
            ratios = [round_ratio(t[a], t[b]) for a, b in (("single", "plain"), ("single", "batched"), ("batched", "ort"))]  # fmt: skip
            n = len(paths)
            diff = report.get("max_abs_logit_diff", report.get("max_abs_box_diff"))
            rows.append([task_name, n, n / plain, n / single, n / single_1, n / batched, n / ort, *ratios, diff])  # fmt: skip
            print(rows[-1], flush=True)
    write_table(
        "bench_predict",
        "Predict: images/s, one at a time vs batched, eager vs onnxruntime",
        [
            "task",
            "images",
            "plain loop",
            "one at a time",
            "one at a time, 1 thread",
            f"batched ({BATCH})",
            f"onnxruntime ({BATCH})",
            "one / plain (time)",
            "batched / one",
            "onnxruntime / eager",
            "export check diff",
        ],
        rows,
        "visionkit.load(...).predict on PNGs of mixed sizes (48-128 px), default model of each task "
        f"(untrained: detectors keep up to their detections_per_img low-score boxes), {args.threads} thread(s) "
        f"unless said, decoding in the main process; each figure the median of {args.repeats} rounds (ratios: the median of each round's ratio of two rows timed one after the other). Plain loop: decode, preprocess, the model and "
        "its result (the task's decode) one image at a time without visionkit's predict path. "
        "Exported detectors take the whole "
        "batch of pictures of different sizes in one call (padded, a size per image); eager "
        "detectors run images of one shape together. CPU shared with other jobs: compare the "
        "ratios, not the absolute numbers.",
    )


if __name__ == "__main__":
    main()
