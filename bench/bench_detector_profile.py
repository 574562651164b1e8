"""Where a detector's per-image time goes: a per-step profile of training and of inference.

    PYTHONPATH=. .venv/bin/python bench/bench_detector_profile.py [--compare REV] [overrides...]

Trains the detection default (Faster R-CNN on shapes; extra Hydra overrides select another
detector) through the CLI's code path (runner: datamodule, task, trainer with the default callbacks
minus the progress bar) for ``--batches`` training batches and ``--val-batches`` validation batches,
with Lightning's SimpleProfiler (data fetch, training_step, backward, optimizer step, validation
and every callback hook) plus forward hooks on the detector's parts (image transform, backbone,
neck, RPN and its conv head / anchors, RoI heads and their pooler / box head / predictor; the rest
of each part is its assignment, sampling, losses, proposals and post-processing). Then times
eval-mode inference on the test split at batch 16 and 1 with the same hooks.

``--compare REV`` runs the same measurement, alternately, on the worktree and on the git revision
REV (extracted to a temporary folder) in fresh processes, and writes the ratios (REV / now) of
each section: a cut's before/after figure in one run. Results: bench/results/detector_profile.md
(or detector_profile_compare.md).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pytorch_lightning as pl
from common import compose, write_table

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = os.environ.get("VISIONKIT_DATA_DIR", str(ROOT / "data"))
# detector parts timed by forward hooks (attribute paths under the task; absent ones are skipped)
PARTS = {
    "image transform (resize, normalise, batch)": "head.detector.transform",
    "backbone": "backbone",
    "neck": "neck",
    "RPN": "head.detector.rpn",
    "RPN conv head": "head.detector.rpn.head",
    "RPN anchors": "head.detector.rpn.anchor_generator",
    "RoI heads": "head.detector.roi_heads",
    "RoI pooler": "head.detector.roi_heads.box_roi_pool",
    "RoI box head": "head.detector.roi_heads.box_head",
    "RoI predictor": "head.detector.roi_heads.box_predictor",
}
# The sections are timed in CPU seconds of this process (all its threads): on a machine shared
# with other jobs a wall clock also counts the time other processes held the cores. Data loading
# runs in worker processes: its section is the main process's wall-clock wait for the next batch.
CLOCK = time.process_time


class StepTimer(pl.Callback):
    """CPU time of each training step's sections, between Lightning's hooks: forward + losses
    (batch start -> before backward), backward, the rest of the closure, optimizer step and the
    hooks after it; and the wall-clock wait for each batch (data). Batches < ``skip`` left out."""

    def __init__(self, skip: int) -> None:
        self.skip = skip
        self.totals: dict[str, float] = defaultdict(float)
        self.steps = 0
        self._end_wall: float | None = None

    def _mark(self) -> float:
        return CLOCK()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.on = batch_idx >= self.skip
        now_wall = time.perf_counter()
        if self.on and self._end_wall is not None:
            self.totals["data (wait for the next batch, wall)"] += now_wall - self._end_wall
        self.t = {"start": CLOCK()}

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        self.t["backward"] = CLOCK()

    def on_after_backward(self, trainer, pl_module) -> None:
        self.t["after_backward"] = CLOCK()

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.t["optimizer"] = CLOCK()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        end = CLOCK()
        self._end_wall = time.perf_counter()
        if not self.on:
            return
        t = self.t
        self.totals["forward + losses (training_step)"] += t["backward"] - t["start"]
        self.totals["backward"] += t["after_backward"] - t["backward"]
        self.totals["rest of the closure"] += t["optimizer"] - t["after_backward"]
        self.totals["optimizer step + batch-end hooks"] += end - t["optimizer"]
        self.totals["whole step (CPU)"] += end - t["start"]
        self.steps += 1


class PartTimer:
    """Cumulative wall time of modules' forward calls, by forward pre/post hooks."""

    def __init__(self, task, parts: dict[str, str]) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.handles = []
        for label, path in parts.items():
            module = task
            for name in path.split("."):
                module = getattr(module, name, None)
                if module is None:
                    break
            if module is None:
                continue
            self.handles.append(module.register_forward_pre_hook(self._pre(label)))
            self.handles.append(module.register_forward_hook(self._post(label)))
        self._start: dict[str, float] = {}

    def _pre(self, label: str):
        def hook(module, args):
            self._start[label] = CLOCK()

        return hook

    def _post(self, label: str):
        def hook(module, args, output):
            self.seconds[label] += CLOCK() - self._start.pop(label)
            self.calls[label] += 1

        return hook

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


class PartWindow(pl.Callback):
    """Lightning callback: the part timers' totals over training batches ``skip``.. only (not the
    warm-up batches, validation or the training-metric pass)."""

    def __init__(self, parts: PartTimer, skip: int) -> None:
        self.parts, self.skip = parts, skip
        self.seconds: dict[str, float] | None = None
        self.images = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.skip and self.seconds is None:
            self.parts.reset()
        if batch_idx >= self.skip and self.seconds is None:
            self.images += len(batch[0])

    def on_validation_start(self, trainer, pl_module) -> None:
        if self.seconds is None:
            self.seconds = dict(self.parts.seconds)

    on_train_epoch_end = on_validation_start


def measure(overrides: list[str], batches: int, val_batches: int, infer_images: int) -> dict:
    """One profile: training (SimpleProfiler + part hooks) and inference at batch 16 and 1."""
    import torch
    from pytorch_lightning.profilers import SimpleProfiler

    from visionkit import runner

    out = tempfile.mkdtemp(prefix="bench_profile_")
    cfg = compose(
        [
            "task=detection",
            f"paths.data_dir={DATA_DIR}",
            f"hydra.run.dir={out}",
            "trainer.max_epochs=1",
            f"trainer.limit_train_batches={batches}",
            f"trainer.limit_val_batches={val_batches}",
            "trainer.accelerator=cpu",
            "callbacks.progress=null",
            "test_after_fit=false",
            *overrides,
        ]
    )
    cfg.paths.output_dir = out
    runner.setup(cfg)
    dm = runner.build_datamodule(cfg)
    task = runner.build_task(cfg, dm)
    profiler = SimpleProfiler()
    parts = PartTimer(task, PARTS)
    skip = 2  # first batches warm up allocators: left out of the per-step sections
    window = PartWindow(parts, skip)
    steps = StepTimer(skip)
    trainer = runner.build_trainer(cfg, callbacks=[*runner.build_callbacks(cfg), window, steps])
    trainer.profiler = profiler  # set after building: the trainer config stays the CLI's
    pl.seed_everything(0, verbose=False)
    fit_start = time.perf_counter()
    trainer.fit(task, datamodule=dm)
    fit_wall = time.perf_counter() - fit_start
    durations = {k: list(v) for k, v in profiler.recorded_durations.items()}
    n_train = batches * dm.batch_size
    train_parts = window.seconds or {}
    step_means = {k: v / max(steps.steps, 1) for k, v in steps.totals.items()}
    step_wall = durations.get("run_training_batch", [])[skip:]
    hooks = {
        k: sum(v)
        for k, v in durations.items()
        if k.startswith("[Callback]") and sum(v) > 0.05 and "train_batch" not in k
    }
    val = {
        "validation loop": sum(durations.get("[_EvaluationLoop].val_next", []))
        + sum(durations.get("[Strategy]SingleDeviceStrategy.validation_step", [])),
        "validation mAP compute": sum(
            durations.get("[LightningModule]DetectionTask.on_validation_epoch_end", [])
        ),
    }

    # inference: eval mode, test split (decoded tensors), batch 16 then batch 1
    task.eval()
    dm.setup("test")
    images = []
    for batch_images, _ in dm.test_dataloader():
        images.extend(batch_images)
        if len(images) >= infer_images:
            break
    images = images[:infer_images]
    infer = {}
    with torch.no_grad():
        task(images[:2])  # warm-up
        for bs in (16, 1):
            parts.reset()
            start, wall = CLOCK(), time.perf_counter()
            for i in range(0, len(images), bs):
                task(images[i : i + bs])
            total = CLOCK() - start
            infer[bs] = {"total": total, "wall": time.perf_counter() - wall, "parts": dict(parts.seconds), "images": len(images)}  # fmt: skip
    parts.remove()
    return {
        "threads": torch.get_num_threads(),
        "workers": int(cfg.data.num_workers),
        "batch_size": int(dm.batch_size),
        "train_images": n_train,
        "step_images": dm.batch_size,
        "steps": step_means,
        "step_wall": sum(step_wall) / max(len(step_wall), 1),
        "train_parts": train_parts,
        "train_part_images": window.images,
        "hooks": hooks,
        "val": val,
        "fit_wall": fit_wall,
        "infer": infer,
    }


def ms_per_image(seconds: float, images: int) -> float:
    return 1000.0 * seconds / max(images, 1)


def profile_rows(r: dict) -> list[list[object]]:
    """Sections as rows: (section, ms per image, share of the step / of inference)."""
    rows: list[list[object]] = []
    whole = r["steps"]["whole step (CPU)"]
    img = r["step_images"]
    for label, sec in r["steps"].items():
        share = sec / whole if whole and "wall" not in label else ""
        rows.append([f"train: {label}", ms_per_image(sec, img), share])
    n = r["train_part_images"]
    total_train = whole * n / img
    for label, sec in r["train_parts"].items():
        rows.append([f"train forward: {label}", ms_per_image(sec, n), sec / total_train])
    for bs in (16, 1):
        inf = r["infer"][str(bs)] if str(bs) in r["infer"] else r["infer"][bs]
        rows.append([f"inference batch {bs}: whole", ms_per_image(inf["total"], inf["images"]), 1.0])  # fmt: skip
        for label, sec in inf["parts"].items():
            rows.append([f"inference batch {bs}: {label}", ms_per_image(sec, inf["images"]), sec / inf["total"]])  # fmt: skip
    for label, sec in {**r["val"], **r["hooks"]}.items():
        rows.append([f"per validation epoch: {label} (s)", sec, ""])
    return rows


def rpn_ab(overrides: list[str], rounds: int, steps: int) -> None:
    """Training steps with torchvision's RPN and with visionkit's BatchedRPN, alternately, in this
    process on the same batches (same weights: each step restarts from a copy); writes the medians
    of each and their ratio (rpn_ab.md)."""
    import copy

    import torch
    from torchvision.models.detection.rpn import RegionProposalNetwork

    from visionkit import runner
    from visionkit.models.heads.rpn import BatchedRPN

    out = tempfile.mkdtemp(prefix="bench_rpn_ab_")
    cfg = compose(["task=detection", f"paths.data_dir={DATA_DIR}", f"hydra.run.dir={out}", "data.num_workers=0", *overrides])  # fmt: skip
    cfg.paths.output_dir = out
    dm = runner.build_datamodule(cfg)
    template = runner.build_task(cfg, dm)
    template.log = template.log_dict = lambda *a, **k: None  # no trainer: nothing to log to
    loader = iter(dm.train_dataloader())
    batches = [next(loader) for _ in range(steps)]
    classes = {"torchvision RPN": RegionProposalNetwork, "visionkit BatchedRPN": BatchedRPN}
    times: dict[str, dict[str, list[float]]] = {
        k: {"wall": [], "cpu": [], "rpn": []} for k in classes
    }
    losses: dict[str, list[float]] = {k: [] for k in classes}
    for r in range(rounds + 1):  # round 0 warms up
        for label, cls in classes.items():
            task = copy.deepcopy(template).train()
            task.head.detector.rpn.__class__ = cls
            rpn = PartTimer(task, {"rpn": "head.detector.rpn"})  # CPU time of its forward
            optimizer = torch.optim.AdamW(task.parameters(), 1e-3)
            torch.manual_seed(0)
            wall, cpu = time.perf_counter(), CLOCK()
            for batch in batches:
                loss = task.training_step(batch, 0)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            if r:
                times[label]["wall"].append(time.perf_counter() - wall)
                times[label]["cpu"].append(CLOCK() - cpu)
                times[label]["rpn"].append(rpn.seconds["rpn"])
                losses[label].append(float(loss.detach()))
    images = sum(len(b[0]) for b in batches)
    base = {k: statistics.median(v) for k, v in times["torchvision RPN"].items()}
    rows = []
    for label in classes:
        med = {k: statistics.median(v) for k, v in times[label].items()}
        rows.append([label, images / med["wall"], 1000 * med["cpu"] / images, 1000 * med["rpn"] / images, base["wall"] / med["wall"], base["cpu"] / med["cpu"], base["rpn"] / med["rpn"], losses[label][-1]])  # fmt: skip
    write_table(
        "rpn_ab",
        f"Faster R-CNN training steps (shapes, batch {dm.batch_size}): torchvision RPN vs BatchedRPN",
        [
            "RPN",
            "step images/s (wall)",
            "step CPU ms / image",
            "RPN forward CPU ms / image",
            "step speed-up (wall)",
            "step speed-up (CPU)",
            "RPN forward speed-up (CPU)",
            "last loss",
        ],
        rows,
        f"Median of {rounds} alternating rounds of {steps} training steps each (forward, losses, "
        f"backward, AdamW) in one process, same batches and initial weights, {torch.get_num_threads()} "
        "threads; the same last loss shows the same results. Shared 2-core machine: only the "
        "ratios count.\n\nCommand: `PYTHONPATH=. python bench/bench_detector_profile.py --rpn-ab`",
    )


def optimizer_ab(overrides: list[str], rounds: int, steps: int) -> None:
    """The configured optimizer's step over the detector's parameter groups: for-loop
    (``foreach=False``, torch's CPU default without ``fused``), ``foreach=True`` and ``fused=True``
    (the shipped configs), alternately in this process on the same gradients; the largest
    difference of the final parameters from the for-loop's; writes optimizer_ab.md."""
    import copy

    import torch
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from visionkit import runner

    out = tempfile.mkdtemp(prefix="bench_opt_ab_")
    cfg = compose(["task=detection", f"paths.data_dir={DATA_DIR}", f"hydra.run.dir={out}", *overrides])  # fmt: skip
    cfg.paths.output_dir = out
    dm = runner.build_datamodule(cfg)
    template = runner.build_task(cfg, dm)
    gen = torch.Generator().manual_seed(0)
    grads = [[torch.randn(p.shape, generator=gen) for p in template.parameters()] for _ in range(steps)]  # fmt: skip
    variants = {
        "for-loop (foreach=False)": {"foreach": False, "fused": False},
        "foreach=True": {"foreach": True, "fused": False},
        "fused=True (shipped)": {"foreach": False, "fused": True},
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    final: dict[str, list[torch.Tensor]] = {}
    for r in range(rounds + 1):
        for label, options in variants.items():
            task = copy.deepcopy(template)
            opt_cfg = OmegaConf.merge(OmegaConf.to_container(cfg.optimizer), options)
            optimizer = instantiate(opt_cfg)(task.param_groups())
            params = list(task.parameters())
            start = time.perf_counter()
            for step_grads in grads:
                for p, g in zip(params, step_grads, strict=True):
                    p.grad = g
                optimizer.step()
            if r:
                times[label].append(time.perf_counter() - start)
            final[label] = [p.detach().clone() for p in params]
    loop = final["for-loop (foreach=False)"]
    base = statistics.median(times["for-loop (foreach=False)"])
    rows = [
        [k, 1000 * statistics.median(v) / steps, base / statistics.median(v),
         max(float((a - b).abs().max()) for a, b in zip(final[k], loop, strict=True))]
        for k, v in times.items()
    ]  # fmt: skip
    n_params = sum(p.numel() for p in template.parameters())
    write_table(
        "optimizer_ab",
        f"Optimizer step ({cfg.optimizer._target_}) over the detector's parameter groups"
        f" ({' '.join(overrides) or 'task=detection'}: {n_params / 1e6:.2f} M parameters)",
        ["implementation", "ms / step", "speed-up", "max abs diff after the steps"],
        rows,
        f"Median of {rounds} alternating rounds of {steps} steps on the same gradients, "
        f"{torch.get_num_threads()} threads; the last column: the parameters' largest difference "
        "from the for-loop's after the steps. Only the ratios count.\n\nCommand: `PYTHONPATH=. python "
        f"bench/bench_detector_profile.py --optimizer-ab {' '.join(overrides)}`".rstrip("` ")
        + "`",
    )


def run_child(tree: Path, args: argparse.Namespace) -> dict:
    """One measurement in a fresh process whose visionkit is ``tree``'s."""
    out = Path(tempfile.mkstemp(suffix=".json")[1])
    cmd = [
        sys.executable, __file__, "--child", str(out), "--batches", str(args.batches),
        "--val-batches", str(args.val_batches), "--infer-images", str(args.infer_images), *args.overrides,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(tree), "VISIONKIT_DATA_DIR": DATA_DIR}
    subprocess.run(cmd, check=True, env=env, cwd=tree, capture_output=True)
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=40, help="training batches timed")
    parser.add_argument("--val-batches", type=int, default=10)
    parser.add_argument("--infer-images", type=int, default=160)
    parser.add_argument("--compare", metavar="REV", help="git revision to compare against (before)")
    parser.add_argument(
        "--repeats", type=int, default=2, help="alternating runs per tree (--compare)"
    )
    parser.add_argument("--rpn-ab", action="store_true", help="torchvision RPN vs BatchedRPN, in-process")  # fmt: skip
    parser.add_argument("--optimizer-ab", action="store_true", help="optimizer for-loop vs foreach vs fused, in-process")  # fmt: skip
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides (another detector)")
    args = parser.parse_args()
    if args.child:
        r = measure(args.overrides, args.batches, args.val_batches, args.infer_images)
        Path(args.child).write_text(json.dumps(r))
        return
    if args.optimizer_ab:
        optimizer_ab(args.overrides, args.repeats, args.batches)
        return
    if args.rpn_ab:
        rpn_ab(args.overrides, args.repeats, args.batches)
        return
    label = " ".join(args.overrides) or "task=detection (Faster R-CNN default)"
    if not args.compare:
        r = run_child(ROOT, args)
        wait = r["steps"].get("data (wait for the next batch, wall)", 0.0)
        rate = r["step_images"] / (r["step_wall"] + wait)
        inf16, inf1 = r["infer"]["16"], r["infer"]["1"]
        write_table(
            "detector_profile",
            f"Per-image cost of {label}, shapes 64 px ({r['threads']} threads, {r['workers']} loader workers)",
            ["section", "CPU ms / image", "share"],
            profile_rows(r),
            f"CPU time of the main process (all its threads; data loading, in worker processes, is "
            f"the wall-clock wait for each batch; validation-epoch items are wall seconds). Training: "
            f"{args.batches} batches of {r['batch_size']} (first 2 left out), {rate:.1f} images/s "
            f"(wall) in the training loop; inference (eval mode, decoded tensors, test split, "
            f"{inf16['images']} images): {inf16['images'] / inf16['wall']:.1f} images/s (wall) at batch "
            f"16, {inf1['images'] / inf1['wall']:.1f} at batch 1. Shares of the forward parts are of "
            f"the whole step; nested parts (RPN conv head inside RPN) are counted in both. Shared "
            f"2-core machine: absolute times are noisy.\n\nCommand: `PYTHONPATH=. "
            f"python bench/bench_detector_profile.py {' '.join(args.overrides)}`",
        )
        return
    before_tree = Path(tempfile.mkdtemp(prefix="bench_profile_rev_"))
    archive = subprocess.run(["git", "archive", args.compare], cwd=ROOT, check=True, capture_output=True).stdout  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(before_tree)], input=archive, check=True)
    runs: dict[str, list[dict]] = {"before": [], "after": []}
    for _ in range(args.repeats):
        runs["before"].append(run_child(before_tree, args))
        runs["after"].append(run_child(ROOT, args))
    rows = []
    keys = [row[0] for row in profile_rows(runs["after"][0]) if row[2] != ""]
    keys += [row[0] for row in profile_rows(runs["after"][0]) if row[2] == ""]
    for key in keys:
        vals = {}
        for side, rs in runs.items():
            found = [dict((row[0], row[1]) for row in profile_rows(r)).get(key) for r in rs]
            found = [v for v in found if v is not None]
            vals[side] = statistics.median(found) if found else None
        b, a = vals["before"], vals["after"]
        rows.append([key, b if b is not None else "-", a if a is not None else "-", (b / a) if a and b else "-"])  # fmt: skip
    rev = subprocess.run(["git", "rev-parse", "--short", args.compare], cwd=ROOT, capture_output=True, text=True).stdout.strip()  # fmt: skip
    now = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()  # fmt: skip
    write_table(
        "detector_profile_compare",
        f"Before ({rev}) / after ({now} + worktree): per-image cost of {label}",
        ["section", f"before {rev} ms/img", "after ms/img", "before / after"],
        rows,
        f"Median of {args.repeats} alternating fresh-process runs per tree ({args.batches} training "
        f"batches, first 2 left out; {args.infer_images} test images). Ratio > 1: the cut is faster. "
        "Shared 2-core machine: only ratios within this run count.",
    )


if __name__ == "__main__":
    main()
