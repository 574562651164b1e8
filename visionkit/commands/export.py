"""``python -m visionkit export ckpt_path=... format=onnx|torchscript [input=<images>]``.

Writes ``model.onnx`` (or ``model.pt``) and ``export.json`` into the run directory (or ``output``):
the exported model, checked against the eager one on sample images (``input``: an image or a
folder, the first ``samples`` images; default: generated pictures of a few sizes). A failed check
is an error. See :mod:`visionkit.export`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from visionkit import runner
from visionkit.errors import ConfigError


def run(cfg: DictConfig) -> dict[str, Any]:
    """Export the checkpoint's model; returns the check's report (also in export.json)."""
    import numpy as np

    from visionkit import export
    from visionkit.commands.predict import find_images

    if not cfg.get("ckpt_path"):
        raise ConfigError("export needs a checkpoint: add ckpt_path=<path to .ckpt>")
    fmt = str(cfg.get("format"))
    if fmt not in export.FORMATS:
        raise ConfigError(f"export: unknown format '{fmt}'; choose one of {', '.join(export.FORMATS)} (config key format)")  # fmt: skip
    out = runner.setup(cfg)
    task = runner.load_task_from_checkpoint(cfg.ckpt_path).eval()
    preprocess = task.preprocess()
    count = max(1, int(cfg.get("samples") or 3))
    if cfg.get("input"):
        items: list[Any] = find_images(cfg.input)[1][:count]
    else:  # pictures of several sizes and aspect ratios (what the model is checked on)
        rng = np.random.default_rng(int(cfg.seed))
        size = int(preprocess.spec.get("image_size") or 64)
        shapes = [(size, size), (size * 3 // 4, size), (size, size * 5 // 4)]
        items = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in shapes[:count]]
    path = Path(cfg.output) if cfg.get("output") else out / f"model{export.FORMATS[fmt]}"
    from visionkit.progress import shown, status

    with shown(bool(cfg.get("progress", True))), status(f"export: writing {path} and checking it on {len(items)} images"):  # fmt: skip
        report = export.export(task, fmt, path, items)
    keys = [k for k in report if k.startswith("max_abs")]
    print(f"export: {path} ({fmt}); check on {report['images']} images passed: " + ", ".join(f"{k} {report[k]:.3g}" for k in keys))  # fmt: skip
    return report
