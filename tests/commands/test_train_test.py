"""The train and test commands as a user runs them (subprocess): files written, exit codes, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import CLI, FAST, command_args, readme_commands, readme_task_commands, run_cli


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """One short classification training run shared by the tests below: the README's first
    command (the default experiment), FAST appended."""
    run = tmp_path_factory.mktemp("cls") / "run"
    run_cli(*command_args(readme_task_commands()["classification"]), *FAST, "trainer.max_epochs=2", f"hydra.run.dir={run}", cwd=run.parent, data_dir=data_dir, check=True)  # fmt: skip
    return run


def test_train_writes_config_checkpoints_metrics_results_and_picture(trained_run: Path) -> None:
    assert (trained_run / "config.yaml").is_file()
    assert (trained_run / ".hydra" / "config.yaml").is_file()
    assert (trained_run / "checkpoints" / "best.ckpt").is_file()
    assert (trained_run / "checkpoints" / "last.ckpt").is_file()
    metrics_csv = (trained_run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"val/acc", "val/f1", "train/loss", "test/acc"} <= set(metrics_csv)
    results = json.loads((trained_run / "results.json").read_text())
    for key in ("val/acc", "val/f1", "val/loss", "test/acc", "test/f1"):
        assert 0.0 <= results[key] <= (1.0 if "loss" not in key else 100.0), key
    assert Path(results["best_checkpoint"]) == trained_run / "checkpoints" / "best.ckpt"
    assert results["best_score"]["val/acc"] == pytest.approx(max_logged(trained_run, "val/acc"))
    picture = trained_run / "confusion_matrix_test.png"
    assert picture.is_file() and picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_metrics_csv_has_every_row_once_the_process_has_exited(trained_run: Path) -> None:
    """The CLI skips the exit's garbage collection (gc.freeze, visionkit/__main__.py): nothing of
    the run may depend on it. Two epochs of two logged steps: train/loss at steps 0-3, val/* for
    both epochs, one test row (results.json's test/acc), and the file ends with a whole line."""
    import csv

    text = (trained_run / "metrics.csv").read_text()
    assert text.endswith("\n")
    rows = list(csv.DictReader(text.splitlines()))
    assert [int(r["step"]) for r in rows if r["train/loss"]] == [0, 1, 2, 3]
    assert sorted(logged_rows(trained_run, "val/")) == [0, 1]
    (test_row,) = [r for r in rows if r["test/acc"]]
    results = json.loads((trained_run / "results.json").read_text())
    assert float(test_row["test/acc"]) == pytest.approx(results["test/acc"])
    assert rows[-1] == test_row


def test_train_draws_learning_curves_and_stores_the_diagnosis(trained_run: Path) -> None:
    """Per epoch: the training metric (an eval pass on training images, train_eval/acc in
    metrics.csv), the validation metric, losses and rates; a verdict with its numbers."""
    picture = trained_run / "learning_curves.png"
    assert picture.is_file() and picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads((trained_run / "results.json").read_text())
    curves, diagnosis = results["learning_curves"], results["diagnosis"]
    assert curves["png"] == str(picture) and curves["epoch"] == [0, 1]
    rows = logged_rows(trained_run, "train_eval/")
    assert curves["train_metric"] == pytest.approx([rows[e]["train_eval/acc"] for e in (0, 1)])
    assert curves["train_eval_loss"] == pytest.approx([rows[e]["train_eval/loss"] for e in (0, 1)])
    val = logged_rows(trained_run, "val/")
    assert curves["val_metric"] == pytest.approx([val[e]["val/acc"] for e in (0, 1)])
    assert all(loss > 0 for loss in curves["train_loss"]) and set(curves["lr"][0]) >= {"head"}
    assert diagnosis["verdict"] in ("underfitting", "overfitting", "both", "neither")
    assert diagnosis["metric"] == "acc" and diagnosis["epochs"] == 2
    assert diagnosis["train_best"] == pytest.approx(max(curves["train_metric"]))
    assert diagnosis["thresholds"]["low_train_metric"] == 0.7 and diagnosis["reasons"]


def max_logged(run: Path, key: str) -> float:
    lines = (run / "metrics.csv").read_text().splitlines()
    header = lines[0].split(",")
    col = header.index(key)
    return max(float(row.split(",")[col]) for row in lines[1:] if row.split(",")[col])


def test_results_report_the_validation_of_the_best_checkpoint(cli: CLI, fast: list[str], tmp_path: Path) -> None:  # fmt: skip
    """val/loss monitored with mode=max makes the first epoch the best (the loss falls): val/* in
    results.json are that epoch's row of metrics.csv, the last epoch's are under last/val/*. The
    model: the README's command swapping every block's norm and activation."""
    import torch

    (blocks,) = [c for c in readme_commands("Train each task") if "model.norm=gn" in c]
    cli(*command_args(blocks), *fast, "trainer.max_epochs=3", "task.monitor=val/loss", "task.monitor_mode=max", "test_after_fit=false", "hydra.run.dir=r", check=True)  # fmt: skip
    run = tmp_path / "r"
    results = json.loads((run / "results.json").read_text())
    rows = logged_rows(run, "val/")
    best, last = results["best_epoch"], max(rows)
    assert best < last == 2  # the case at stake: the last epoch is not the best
    ckpt = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["epoch"] == best
    assert results["val/loss"] == results["best_score"]["val/loss"] == pytest.approx(max_logged(run, "val/loss"))  # fmt: skip
    assert {k: results[k] for k in rows[best]} == pytest.approx(rows[best])
    assert {k: results[f"last/{k}"] for k in rows[last]} == pytest.approx(rows[last])
    assert rows[best] != rows[last]


def logged_rows(run: Path, prefix: str) -> dict[int, dict[str, float]]:
    """metrics.csv's values of the keys starting with ``prefix``, by epoch."""
    lines = (run / "metrics.csv").read_text().splitlines()
    header = lines[0].split(",")
    rows: dict[int, dict[str, float]] = {}
    for line in lines[1:]:
        cells = dict(zip(header, line.split(","), strict=True))
        values = {k: float(v) for k, v in cells.items() if k.startswith(prefix) and v}
        if values:
            rows.setdefault(int(cells["epoch"]), {}).update(values)
    return rows


def test_test_command_evaluates_the_checkpoint(cli: CLI, trained_run: Path, tmp_path: Path) -> None:
    ckpt = trained_run / "checkpoints" / "best.ckpt"
    cli(
        "test",
        f"ckpt_path={ckpt}",
        "data.num_workers=0",
        "callbacks.progress=null",
        "trainer.limit_test_batches=1",
        "hydra.run.dir=t",
        check=True,
    )
    results = json.loads((tmp_path / "t" / "results.json").read_text())
    trained = json.loads((trained_run / "results.json").read_text())
    assert results["checkpoint"] == str(ckpt)
    # same checkpoint, same test batch: the same accuracy as the test after training
    assert results["test/acc"] == pytest.approx(trained["test/acc"])


def test_test_without_checkpoint_is_one_clear_error(cli: CLI) -> None:
    proc = cli("test", "hydra.run.dir=t")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: test needs a checkpoint: add ckpt_path=<path to .ckpt>"


def test_unknown_registry_name_exits_with_one_line(cli: CLI, fast: list[str]) -> None:
    proc = cli("train", "model.norm=batchnrm", *fast, "hydra.run.dir=r")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: unknown norms 'batchnrm'")
    assert "Traceback" not in proc.stderr


def test_unknown_override_exits_non_zero_with_a_clear_message(cli: CLI) -> None:
    proc = cli("train", "trainer.max_epoch=3", "hydra.run.dir=r")
    assert proc.returncode != 0
    assert "Could not override 'trainer.max_epoch'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unknown_command_suggests(cli: CLI) -> None:
    proc = cli("tset")
    assert proc.returncode == 2
    assert "unknown command 'tset'. Did you mean 'test'?" in proc.stderr


def test_help_lists_commands_and_does_not_import_torch(cli: CLI) -> None:
    proc = cli("--help", env={"PYTHONVERBOSE": "1"}, check=True)
    assert (
        "Commands: train, test, predict, export, list, analyze, browse, stats, report"
        in proc.stdout
    )
    assert "task: classification" in proc.stdout
    imported = [line for line in proc.stderr.splitlines() if line.startswith("import ")]
    assert imported, "PYTHONVERBOSE should log imports"
    assert not [line for line in imported if "'torch'" in line or "import torch " in line]


def test_cfg_job_prints_the_composed_config(cli: CLI) -> None:
    proc = cli("--cfg", "job", "model.act=gelu", check=True)
    assert "act: gelu" in proc.stdout and "name: simple_cnn" in proc.stdout


# the README's shapes commands that no other CPU run takes: the two detection tasks (tests/test_cuda.py
# runs them on a GPU), the timm backbone, the deeplabv3 and retinanet heads
SWAPS = [readme_task_commands()[task] for task in ("detection", "instance_segmentation")] + [
    c for c in readme_commands("Train each task") if any(part in c for part in ("model/backbone=timm", "model/head=deeplabv3", "model/head=retinanet"))
]  # fmt: skip
SMALL_SHAPES = ["data.num_train=16", "data.num_val=8", "data.num_test=8", "test_after_fit=false"]


@pytest.mark.parametrize("command", SWAPS, ids=lambda c: c.split("=")[-1])
def test_readme_train_each_task_lines_train(
    cli: CLI, fast: list[str], tmp_path: Path, command: str
) -> None:
    """Each command as written, on a small generated set: the run's config holds the part named
    last on the line, and the run writes its best checkpoint."""
    assert len(SWAPS) == 5, SWAPS
    cli(*command_args(command), *fast, *SMALL_SHAPES, "hydra.run.dir=r", check=True)
    part = command.split("=")[-1]
    assert f": {part}\n" in (tmp_path / "r" / "config.yaml").read_text(), part
    assert (tmp_path / "r" / "checkpoints" / "best.ckpt").is_file()


def test_readme_finetune_command_keeps_the_runs_backbone_frozen(cli: CLI, fast: list[str], tmp_path: Path, trained_run: Path) -> None:  # fmt: skip
    """The README's fine-tuning command as written, its <run> the shared shapes run: digits trained
    for one epoch with the backbone frozen for two, so every backbone weight is the run's."""
    import torch

    (command,) = [c for c in readme_commands("Fine-tune from a checkpoint") if "finetune=" in c]
    source = trained_run / "checkpoints" / "best.ckpt"
    placeholder = "outputs/classification/<run>/checkpoints/best.ckpt"
    cli(*command_args(command, {placeholder: str(source)}), *fast, "test_after_fit=false", "hydra.run.dir=r", check=True)  # fmt: skip
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    assert results["finetune"]["schedule"] == "freeze_unfreeze", results["finetune"]
    before, after = (torch.load(p, map_location="cpu", weights_only=True)["state_dict"] for p in (source, tmp_path / "r" / "checkpoints" / "best.ckpt"))  # fmt: skip
    weights = [k for k in before if k.startswith("backbone.") and "running_" not in k and "num_batches" not in k]  # fmt: skip
    assert weights and all(torch.equal(before[k], after[k]) for k in weights)
