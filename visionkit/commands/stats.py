"""``python -m visionkit stats data=... [task=...]``: statistics of the training images.

Writes ``stats.json`` and ``stats.png`` in the run directory and prints the overrides that
normalise with the data's own mean and std. Samples are read untransformed (original pixels and
annotations) in ``data.num_workers`` worker processes, each reduced to a few numbers where it is
read (:mod:`visionkit.data.statistics`), with a progress bar on a terminal (``progress=false``: none).
"""

from __future__ import annotations

import copy
import json
import time
from typing import Any

from omegaconf import DictConfig

from visionkit import runner
from visionkit.errors import ConfigError


class _Summaries:
    """The dataset's untransformed samples, each reduced to its summary (runs in workers)."""

    def __init__(self, dataset: Any, task: str) -> None:
        self.dataset = copy.copy(dataset)
        self.dataset.transform = None
        self.task = task

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        from visionkit.data.statistics import summarize_sample

        return summarize_sample(self.dataset[index], self.task)


def _as_is(item: Any) -> Any:
    return item


def run(cfg: DictConfig) -> dict[str, Any]:
    """Compute, write and print the statistics of ``cfg.split`` (default: train)."""
    from torch.utils.data import DataLoader, Subset

    from visionkit.data.statistics import (
        DatasetStatistics,
        normalisation_overrides,
        plot_statistics,
    )
    from visionkit.progress import shown, track

    out = runner.setup(cfg)
    dm = runner.build_datamodule(cfg)
    split = str(cfg.get("split", "train"))
    dataset = (getattr(dm, "datasets", None) or {}).get(split)
    if dataset is None or len(dataset) == 0:
        raise ConfigError(f"data '{cfg.data.name}' has no '{split}' split (config key split)")
    task = cfg.task.name
    source: Any = _Summaries(dataset, task)
    limit = cfg.get("max_images")
    if limit is not None:
        source = Subset(source, range(min(int(limit), len(source))))
    loader = DataLoader(
        source, batch_size=None, num_workers=int(cfg.data.get("num_workers", 0)), collate_fn=_as_is
    )
    stats = DatasetStatistics(task, dm.class_names)
    start = time.perf_counter()
    with shown(bool(cfg.get("progress", True))):
        for summary in track(loader, f"stats: {split} images", total=len(source)):
            stats.add(summary)
    result = {"data": cfg.data.name, "split": split, **stats.result()}
    result["seconds"] = round(time.perf_counter() - start, 3)
    result["overrides"] = normalisation_overrides(result, task)
    path = out / "stats.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    picture = plot_statistics(result, out / "stats.png")
    mean = ", ".join(f"{v:.4f}" for v in result["mean"])
    std = ", ".join(f"{v:.4f}" for v in result["std"])
    print(f"{result['images']} {split} images in {result['seconds']:.1f} s: mean [{mean}], std [{std}] (0..1)")  # fmt: skip
    print(f"normalise with: {result['overrides']}")
    print(f"stats: {path}\npicture: {picture}")
    return result
