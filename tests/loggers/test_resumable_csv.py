"""CSVLogger keeps the rows of a run it resumes and drops those of the abandoned timeline."""

from __future__ import annotations

import csv
from pathlib import Path

from visionkit.loggers.resumable_csv import CSVLogger


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def test_reopening_a_run_keeps_its_rows_and_purges_after_the_checkpoint(tmp_path: Path) -> None:
    first = CSVLogger(save_dir=tmp_path, name="", version="")
    for step in range(6):
        first.log_metrics({"train/loss": float(step)}, step=step)
    first.log_metrics({"val/acc": 0.5}, step=5)
    first.save()
    assert len(rows(tmp_path / "metrics.csv")) == 7

    # the resumed run (checkpoint at global step 4): Lightning's logger would delete the file here
    resumed = CSVLogger(save_dir=tmp_path, name="", version="")
    resumed.log_hyperparams({"lr": 0.1})
    assert len(rows(tmp_path / "metrics.csv")) == 7
    assert resumed.purge_from(4) == 3  # steps 4, 5 and the val row at 5
    resumed.log_metrics({"train/loss": 40.0, "lr": 0.01}, step=4)  # a new column
    resumed.save()
    got = rows(tmp_path / "metrics.csv")
    assert [(r["step"], r["train/loss"], r["lr"]) for r in got] == [
        ("0", "0.0", ""),
        ("1", "1.0", ""),
        ("2", "2.0", ""),
        ("3", "3.0", ""),
        ("4", "40.0", "0.01"),
    ]
    assert list(got[0]) == ["lr", "step", "train/loss", "val/acc"]  # sorted, like Lightning's


def test_a_fresh_directory_behaves_like_lightning(tmp_path: Path) -> None:
    logger = CSVLogger(save_dir=tmp_path, name="", version="")
    logger.log_metrics({"a": 1.0}, step=0)
    logger.save()
    assert logger.purge_from(0) == 1
    assert rows(tmp_path / "metrics.csv") == []


def test_a_kill_while_opening_loses_no_rows(tmp_path: Path) -> None:
    """The file is moved aside (renamed) while Lightning's writer opens: a kill then leaves it there."""
    (tmp_path / ".metrics.csv.resume").write_text("epoch,step,train/loss\n0,0,1.5\n0,1,1.25\n")
    logger = CSVLogger(save_dir=tmp_path, name="", version="")
    logger.log_metrics({"train/loss": 1.0}, step=2)
    logger.save()
    assert [r["train/loss"] for r in rows(tmp_path / "metrics.csv")] == ["1.5", "1.25", "1.0"]
    assert not (tmp_path / ".metrics.csv.resume").exists()
