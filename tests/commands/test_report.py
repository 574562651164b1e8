"""``python -m visionkit report``: on a grid sweep written here as Hydra and ``train`` write it,
still running (a job without results, one with a half-written results.json) and with a failed
job. The end-to-end report of a real Optuna sweep is in tests/sweep/test_optuna_sweeper.py."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import yaml

from tests.conftest import CLI

JOBS = [  # overrides, results.json (None: none yet)
    (["model.act=relu", "optimizer.lr=0.001", "trainer.max_epochs=2"],
     {"objective": "val/loss", "val/loss": 0.8, "val/acc": 0.6, "test/acc": 0.5, "last/val/loss": 0.9}),
    (["model.act=gelu", "optimizer.lr=0.001", "trainer.max_epochs=2"],
     {"objective": "val/loss", "val/loss": 0.4, "val/acc": 0.7, "test/acc": 0.65}),
    (["model.act=relu", "optimizer.lr=0.01", "trainer.max_epochs=2"],
     {"status": "failed", "error": "RegistryError: unknown norms 'bnn'"}),
    (["model.act=gelu", "optimizer.lr=0.01", "trainer.max_epochs=2"], None),
    (["model.act=relu", "optimizer.lr=0.1", "trainer.max_epochs=2"], '{"objective": "val/lo'),
]  # fmt: skip


def write_sweep(root: Path) -> Path:
    multirun = {"objective": "val/loss", "objective_mode": None,
                "task": {"name": "classification", "monitor": "val/acc", "monitor_mode": "max"},
                "hydra": {"sweeper": {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"}}}  # fmt: skip
    root.mkdir(parents=True)
    (root / "multirun.yaml").write_text(yaml.safe_dump(multirun))
    for num, (overrides, results) in enumerate(JOBS):
        (root / str(num) / ".hydra").mkdir(parents=True)
        (root / str(num) / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
        if results is not None:
            text = results if isinstance(results, str) else json.dumps(results)
            (root / str(num) / "results.json").write_text(text)
    return root


def test_report_of_a_running_sweep_with_a_failed_job(cli: CLI, tmp_path: Path) -> None:
    root = write_sweep(tmp_path / "multirun" / "x")
    proc = cli("report", str(root), check=True)
    rows = list(csv.DictReader((root / "report.csv").open()))
    assert [r["status"] for r in rows] == ["completed", "completed", "failed", "running", "running"]
    # val/loss is minimised (objective_mode null, a loss): job 1 is best
    assert [r["best"] for r in rows] == ["", "*", "", "", ""]
    assert [r["objective (val/loss)"] for r in rows] == ["0.8", "0.4", "", "", ""]
    assert [r["model.act"] for r in rows] == ["relu", "gelu", "relu", "gelu", "relu"]
    assert "trainer.max_epochs" not in rows[0]  # the same in every job: listed once
    assert rows[1]["test/acc"] == "0.65" and "last/val/loss" not in rows[0]
    markdown = (root / "report.md").read_text()
    assert "Common overrides: `trainer.max_epochs=2`" in markdown
    assert "- job 2 (failed): RegistryError: unknown norms 'bnn'" in markdown
    assert markdown in proc.stdout
    assert (root / "report.png").read_bytes()[:4] == b"\x89PNG"


def test_report_of_a_directory_without_jobs_is_one_error(cli: CLI, tmp_path: Path) -> None:
    proc = cli("report", str(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: report: no job under {tmp_path} (expected <n>/.hydra/overrides.yaml)"  # fmt: skip
