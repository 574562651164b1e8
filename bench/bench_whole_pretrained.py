"""Fine-tuning from a whole pretrained model vs a pretrained backbone only vs from scratch:
``.venv/bin/python bench/bench_whole_pretrained.py``.

A ResNet-18 + FPN Faster R-CNN (torchvision's layout: backbone ``resnet``, neck ``tv_fpn``) is
trained on ``shapes`` (seed 0), then fine-tuned on 100 images of a different shapes set (seed 1:
other images, rotations up to 90 degrees, smaller shapes) three ways: ``model.pretrained`` (whole
model), ``model.backbone.pretrained`` (backbone only) and from scratch; val mAP@0.5 after each
epoch. Writes bench/results/bench_whole_pretrained.md and whole_pretrained.png.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch

from visionkit.plugins import load_all
from visionkit.registries import DATASETS, TASKS

OUT = Path(__file__).resolve().parent / "results"
MODEL = {
    "backbone": {"name": "resnet", "depth": 18, "norm": "bn"},
    "neck": {"name": "tv_fpn", "out_channels": 64, "in_indices": [1, 2, 3, 4], "extra": "maxpool"},
    "head": {
        "name": "fasterrcnn", "min_size": 64, "roi_levels": 4, "representation_size": 256,
        "anchor_sizes": [[8], [16], [32], [64], [128]],
        "rpn_pre_nms_top_n_train": 600, "rpn_post_nms_top_n_train": 300,
        "rpn_pre_nms_top_n_test": 300, "rpn_post_nms_top_n_test": 150, "box_batch_size_per_image": 128,
    },
}  # fmt: skip
OPTIMIZER = {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3, "weight_decay": 1e-4}


class MapPerEpoch(pl.Callback):
    def __init__(self) -> None:
        self.values: list[float] = []

    def on_validation_end(self, trainer, task) -> None:  # after the task logged its metrics
        if not trainer.sanity_checking and "val/map_50" in trainer.callback_metrics:
            self.values.append(float(trainer.callback_metrics["val/map_50"]))


def shapes(root: str, **kw):
    spec = {"name": "shapes", "root": f"{root}/shapes", "image_size": 64, "num_workers": 0, "batch_size": 16, **kw}  # fmt: skip
    dm = DATASETS.build(spec, task="detection")
    dm.prepare_data()
    dm.setup("fit")
    return dm


def train(dm, epochs: int, model: dict) -> tuple[object, list[float]]:
    task = TASKS.get("detection")(model=model, num_classes=dm.num_classes, label_map={"names": dm.class_names}, optimizer=OPTIMIZER)  # fmt: skip
    track = MapPerEpoch()
    trainer = pl.Trainer(
        accelerator="cpu", max_epochs=epochs, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, callbacks=[track],
    )  # fmt: skip
    trainer.fit(task, datamodule=dm)
    return task, track.values


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pretrain-images", type=int, default=600)
    parser.add_argument("--pretrain-epochs", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", nargs="*", help="variants to run (name prefixes: whole, backbone, from)")  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_all()
    start = time.perf_counter()
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        pl.seed_everything(0, verbose=False)
        source = shapes(tmp, num_train=args.pretrain_images, num_val=50, num_test=10, seed=0)
        pre, pre_curve = train(source, args.pretrain_epochs, MODEL)
        print(
            f"[{time.perf_counter() - start:.0f} s] pretrained: val mAP@0.5 {pre_curve}", flush=True
        )
        ckpt = f"{tmp}/pre.ckpt"
        torch.save({"state_dict": pre.state_dict(), "hyper_parameters": dict(pre.hparams), "visionkit": {"task": "detection", "version": "bench"}}, ckpt)  # fmt: skip
        target = shapes(tmp, num_train=100, num_val=50, num_test=10, seed=1, max_rotation=90.0, min_size=0.08, max_size=0.2)  # fmt: skip
        variants = {
            "whole model (model.pretrained)": {**MODEL, "pretrained": ckpt},
            "backbone only (model.backbone.pretrained)": {**MODEL, "backbone": {**MODEL["backbone"], "pretrained": ckpt}},
            "from scratch": MODEL,
        }  # fmt: skip
        curves = {}
        for name, model in variants.items():
            if args.only and not name.startswith(tuple(args.only)):
                continue
            pl.seed_everything(1, verbose=False)
            curves[name] = train(target, args.epochs, model)[1]
            print(f"[{time.perf_counter() - start:.0f} s] {name}: {curves[name]}", flush=True)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, values in curves.items():
        ax.plot(range(1, len(values) + 1), values, marker="o", label=name)
    ax.set_xlabel("epoch (100 training images)")
    ax.set_ylabel("val mAP@0.5")
    ax.set_title("Faster R-CNN (ResNet-18 FPN) fine-tuned on a new shapes set")
    ax.legend()
    fig.tight_layout()
    fig.savefig(OUT / "whole_pretrained.png", dpi=100)
    lines = [
        "# Fine-tuning from a whole pretrained model vs backbone only vs scratch",
        "",
        f"Pretrained {args.pretrain_epochs} epochs on {args.pretrain_images} shapes images (val mAP@0.5 {pre_curve[-1]:.3f}); "
        f"fine-tuned {args.epochs} epochs on 100 images of another shapes set (seed 1, rotation 90, smaller shapes).",
        "",
        "| start | " + " | ".join(f"epoch {i + 1}" for i in range(args.epochs)) + " |",
        "|---|" + "---|" * args.epochs,
    ]  # fmt: skip
    lines += [f"| {name} | " + " | ".join(f"{v:.3f}" for v in values) + " |" for name, values in curves.items()]  # fmt: skip
    lines += ["", f"Total {time.perf_counter() - start:.0f} s on {args.threads} CPU threads.", ""]
    (OUT / "bench_whole_pretrained.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
