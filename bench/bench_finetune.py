"""Transfer-learning demonstration and freeze cost: ``.venv/bin/python bench/bench_finetune.py``.

1. Cost: a frozen-backbone epoch (``linear_probe``) against a full fine-tune epoch, same model and
   data, measured in this run (the issue asks for <= 0.70).
2. Accuracy: pretrain a small CNN on ``shapes``, then fine-tune on small labelled subsets of
   ``digits`` (scikit-learn's 8x8 digits, upscaled) with each schedule and from scratch, same
   epochs; reports accuracy per schedule and subset size, and where the ranking changes.

Writes bench/results/bench_finetune.md and bench/results/finetune_accuracy.png.
"""

from __future__ import annotations

import itertools
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from visionkit.callbacks.auto_finetune import bn_domain_distance
from visionkit.plugins import load_all
from visionkit.registries import CALLBACKS, DATASETS, TASKS

OUT = Path(__file__).resolve().parent / "results"
SIZE = 32
BACKBONE = {"name": "simple_cnn", "channels": [16, 32, 64, 64]}
SIZES = (25, 50, 100, 200, 400, 800)
SEEDS = (0, 1)
EPOCHS = 6
SCHEDULES = {
    "scratch": None,
    "full": {"name": "full"},
    "linear_probe": {"name": "linear_probe"},
    "multi_stage_probe": {"name": "multi_stage_probe"},
    "freeze_unfreeze": {"name": "freeze_unfreeze", "frozen_epochs": 2, "warmup_epochs": 1},
    "partial": {"name": "partial", "stages": 2},
    "gradual": {"name": "gradual", "every": 2},
}


def quiet_trainer(epochs: int, callbacks: list) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu", devices=1, max_epochs=epochs, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        limit_val_batches=0, callbacks=callbacks,
    )  # fmt: skip


def make_task(num_classes: int, pretrained: str | None = None, lr: float = 3e-3):
    backbone = dict(BACKBONE, **({"pretrained": pretrained} if pretrained else {}))
    optimizer = {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": lr, "weight_decay": 0.01}  # fmt: skip
    return TASKS.get("classification")(
        model={"backbone": backbone, "head": "linear"}, num_classes=num_classes, optimizer=optimizer
    )


def shapes_tensors(data_dir: str) -> tuple[TensorDataset, tuple, tuple]:
    """The shapes classification train split at 32x32, in memory, and its normalisation."""
    dm = DATASETS.build(
        {"name": "shapes", "root": f"{data_dir}/shapes", "image_size": SIZE, "num_train": 600,
         "num_val": 50, "num_test": 50, "num_workers": 0, "batch_size": 200},
        task="classification",
    )  # fmt: skip
    dm.prepare_data()
    dm.setup("fit")
    images, labels = zip(*[(x, y) for x, y in dm.train_dataloader()], strict=True)
    return TensorDataset(torch.cat(images), torch.cat(labels)), tuple(dm.mean), tuple(dm.std)


def digits_tensors(mean: tuple, std: tuple) -> TensorDataset:
    """scikit-learn digits (bundled, offline): 8x8 grey -> 32x32 RGB, normalised like shapes."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=SIZE, mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    return TensorDataset(x, torch.tensor(digits.target))


def fit(task, data: TensorDataset, epochs: int, callbacks: list, batch_size: int = 32) -> None:
    loader = DataLoader(data, batch_size=batch_size, shuffle=True)
    quiet_trainer(epochs, callbacks).fit(task, train_dataloaders=loader)


@torch.no_grad()
def accuracy(task, data: TensorDataset) -> float:
    task.eval()
    x, y = data.tensors
    return float((task(x).argmax(1) == y).float().mean())


class EpochTimer(pl.Callback):
    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_epoch_start(self, trainer, task) -> None:
        self.t = time.perf_counter()

    def on_train_epoch_end(self, trainer, task) -> None:
        self.times.append(time.perf_counter() - self.t)


def epoch_cost(data: TensorDataset, ckpt: str) -> dict[str, float]:
    """Median epoch seconds (first epoch dropped) for full vs frozen-backbone training."""
    subset = TensorDataset(*(t[:512] for t in data.tensors))
    out = {}
    for name in ("full", "linear_probe", "full", "linear_probe"):  # interleaved against drift
        timer = EpochTimer()
        fit(make_task(10, ckpt), subset, 3, [CALLBACKS.build({"name": name, "verbose": False}), timer], batch_size=128)  # fmt: skip
        out.setdefault(name, []).extend(timer.times[1:])
    return {k: statistics.median(v) for k, v in out.items()}


def log(start: float, message: str) -> None:
    print(f"[{time.perf_counter() - start:6.1f} s] {message}", flush=True)


def main() -> None:
    load_all()
    torch.set_num_threads(1)  # the machine is shared; one thread gives steadier timings
    start = time.perf_counter()
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        pl.seed_everything(0, verbose=False)
        shapes, mean, std = shapes_tensors(tmp)
        pre = make_task(6)
        fit(pre, shapes, 10, [], batch_size=64)
        log(start, "pretrained on shapes")
        shapes_acc = accuracy(pre, shapes)
        ckpt = f"{tmp}/shapes.ckpt"
        torch.save(
            {"state_dict": pre.state_dict(), "hyper_parameters": dict(pre.hparams),
             "visionkit": {"task": "classification", "version": "bench"}},
            ckpt,
        )  # fmt: skip
        digits = digits_tensors(mean, std)
        distance = {
            "shapes": bn_domain_distance(pre.backbone, [shapes.tensors[0][:256]]),
            "digits": bn_domain_distance(pre.backbone, [digits.tensors[0][:256]]),
        }
        log(start, f"BatchNorm domain distance {distance}")
        g = torch.Generator().manual_seed(0)
        order = torch.randperm(len(digits), generator=g)
        test = TensorDataset(*(t[order[:500]] for t in digits.tensors))
        pool = order[500:]
        cost = epoch_cost(digits, ckpt)
        log(start, f"epoch cost {cost}")
        acc: dict[str, dict[int, float]] = {name: {} for name in SCHEDULES}
        for n in SIZES:
            train = TensorDataset(*(t[pool[:n]] for t in digits.tensors))
            for name, spec in SCHEDULES.items():
                runs = []
                for seed in SEEDS:
                    pl.seed_everything(seed, verbose=False)
                    task = make_task(10, None if spec is None else ckpt)
                    fit(task, train, EPOCHS, [] if spec is None else [CALLBACKS.build({**spec, "verbose": False})])  # fmt: skip
                    runs.append(accuracy(task, test))
                acc[name][n] = sum(runs) / len(runs)
            log(start, f"{n} images: { {k: round(v[n], 3) for k, v in acc.items()} }")
    seconds = time.perf_counter() - start
    write(acc, cost, shapes_acc, distance, seconds)


def write(acc: dict[str, dict[int, float]], cost: dict[str, float], shapes_acc: float, distance: dict[str, float], seconds: float) -> None:  # fmt: skip
    best = {n: max(acc, key=lambda s: acc[s][n]) for n in SIZES}
    changes = [f"{a} -> {b} images: best {best[a]} -> {best[b]}" for a, b in itertools.pairwise(SIZES) if best[a] != best[b]]  # fmt: skip
    lp_vs_full = [n for n in SIZES if acc["full"][n] > acc["linear_probe"][n]]
    lines = [
        "# bench_finetune",
        "",
        f"Pretrained on shapes ({shapes_acc:.3f} train accuracy), fine-tuned on digits subsets, "
        f"{EPOCHS} epochs each, accuracy on 500 held-out digits; simple_cnn {BACKBONE['channels']}, "
        f"{SIZE}x{SIZE}, mean of {len(SEEDS)} seeds, CPU, total {seconds:.0f} s.",
        "",
        f"`auto`'s BatchNorm domain distance of the pretrained backbone: shapes "
        f"{distance['shapes']:.3f}, digits {distance['digits']:.3f}.",
        "",
        "## Epoch cost (same model and data, this run)",
        "",
        "| schedule | median epoch s | ratio to full |",
        "|---|---|---|",
        *[f"| {k} | {v:.3f} | {v / cost['full']:.2f} |" for k, v in cost.items()],
        "",
        "## Accuracy by schedule and number of training images",
        "",
        "| schedule | " + " | ".join(str(n) for n in SIZES) + " |",
        "|---|" + "---|" * len(SIZES),
        *[f"| {s} | " + " | ".join(f"{acc[s][n]:.3f}" for n in SIZES) + " |" for s in acc],
        "| **best** | " + " | ".join(best[n] for n in SIZES) + " |",
        "",
        "Ranking changes: " + ("; ".join(changes) if changes else "none over these sizes") + ".",
        "Full fine-tuning beats the linear probe from "
        + (f"{lp_vs_full[0]} images on." if lp_vs_full else "no size tested."),
        "",
        "![accuracy per schedule](finetune_accuracy.png)",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    (OUT / "bench_finetune.md").write_text(text)
    plot(acc)


def plot(acc: dict[str, dict[int, float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, by_size in acc.items():
        style = "--" if name == "scratch" else "-"
        ax.plot(list(by_size), list(by_size.values()), style, marker="o", label=name)
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(SIZES, [str(n) for n in SIZES])
    ax.set_xlabel("digits training images")
    ax.set_ylabel("test accuracy")
    ax.set_title("fine-tuning a shapes-pretrained CNN on digits")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(OUT / "finetune_accuracy.png", dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    np.random.seed(0)
    main()
