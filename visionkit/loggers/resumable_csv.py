"""CSVLogger that survives a resume: rows logged before a crash stay in ``metrics.csv``.

Lightning's CSVLogger deletes an existing ``metrics.csv`` when it opens its directory, so a run
resumed in place (``train ckpt_path=<run>/checkpoints/last.ckpt``) lost every row from before the
crash. This one keeps them; the ``PurgeAbandonedRows`` callback then drops the rows logged after
the checkpoint the run resumed from (``step >= `` its global step, like TensorBoard's
``purge_step``): the resumed run logs those steps again, on the timeline that continues.
"""

from __future__ import annotations

import csv
import os
import warnings
from typing import Any

from pytorch_lightning.loggers import CSVLogger as LightningCSVLogger
from pytorch_lightning.utilities import rank_zero_info, rank_zero_only

from visionkit.files import atomic_open


class CSVLogger(LightningCSVLogger):
    """``pytorch_lightning.loggers.CSVLogger`` that appends to an existing ``metrics.csv``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._opened = False

    @property
    def metrics_file(self) -> str:
        return os.path.join(self.log_dir, "metrics.csv")

    @property
    def experiment(self) -> Any:
        """Lightning's writer, opened over the rows already in ``metrics.csv`` (rank zero)."""
        if self._opened or rank_zero_only.rank != 0:
            return super().experiment
        self._opened = True
        path, aside = self.metrics_file, os.path.join(self.log_dir, ".metrics.csv.resume")
        if os.path.isfile(aside) and not os.path.isfile(path):  # killed while opening last time
            os.replace(aside, path)
        header, _ = read_rows(path)
        if header:  # out of reach of Lightning's writer, which deletes it; renames are atomic
            os.replace(path, aside)
        try:
            with warnings.catch_warnings():  # "... will be deleted": not this file
                warnings.filterwarnings("ignore", message="Experiment logs directory .* not empty")
                writer = super().experiment
        finally:
            if header:
                os.replace(aside, path)
        if header:
            writer.metrics_keys = sorted(header)  # the writer appends under the existing header
        return writer

    def purge_from(self, step: int) -> int:
        """Drop the rows with ``step >= step`` (logged after the checkpoint resumed from)."""
        self.experiment.save()  # nothing logged yet after a resume; flushes if there is
        header, rows = read_rows(self.metrics_file)
        kept = [row for row in rows if _step(row) < step]
        dropped = len(rows) - len(kept)
        if dropped:
            write_rows(self.metrics_file, header, kept)
            rank_zero_info(
                f"{self.metrics_file}: dropped {dropped} rows logged at step >= {step}, after the "
                "checkpoint this run resumes from; the resumed run logs those steps again"
            )
        return dropped


def read_rows(path: str) -> tuple[list[str], list[dict[str, str]]]:
    """(header, rows) of a metrics.csv; ([], []) when there is none."""
    if not os.path.isfile(path):
        return [], []
    with open(path, newline="") as file:
        reader = csv.DictReader(file)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def write_rows(path: str, header: list[str], rows: list[dict[str, str]]) -> None:
    """Rewrite a metrics.csv atomically, columns sorted like Lightning's writer."""
    with atomic_open(path, newline="") as file:
        writer = csv.DictWriter(file, fieldnames=sorted(header))
        writer.writeheader()
        writer.writerows(rows)


def _step(row: dict[str, str]) -> float:
    """A row's step; a row without a readable step (cut by a crash) counts as the latest."""
    try:
        return float(row.get("step") or "inf")
    except ValueError:
        return float("inf")
