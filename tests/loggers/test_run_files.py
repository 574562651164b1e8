"""Loggers: metrics, the composed config and the run's pictures reach MLflow (local sqlite store),
Weights & Biases (offline) and TensorBoard, without network. The MLflow / W&B tests need the
``loggers`` extra (``make`` installs it) and are skipped where it is absent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.conftest import FAST, command_args, readme_commands
from visionkit.loggers.run_files import publish_run, run_pictures

# any attempt to reach a server fails at once instead of leaving the machine
NO_NETWORK = {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "NO_PROXY": ""}  # fmt: skip


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """One short training run logging to MLflow and W&B at once (the README's MobileNet + conv
    head command)."""
    pytest.importorskip("mlflow")
    pytest.importorskip("wandb")
    run = tmp_path_factory.mktemp("loggers") / "run"
    env = {**os.environ, "VISIONKIT_DATA_DIR": str(data_dir), "OMP_NUM_THREADS": "1", **NO_NETWORK}
    (mobilenet,) = [c for c in readme_commands("Train each task") if "model/backbone=mobilenet" in c]  # fmt: skip
    args = [*command_args(mobilenet), "logger=[mlflow,wandb]", *FAST, "trainer.max_epochs=2", f"hydra.run.dir={run}"]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "visionkit", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=run.parent,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "diagnosis (acc):" in proc.stdout  # printed at the end of train
    return run


def test_mlflow_stores_metrics_config_and_pictures_in_the_run_directory(logged_run: Path) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{logged_run / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("visionkit")
    assert Path(experiment.artifact_location.removeprefix("file://")) == logged_run / "mlflow"
    (run,) = client.search_runs([experiment.experiment_id])
    results = json.loads((logged_run / "results.json").read_text())
    assert run.data.metrics["test/acc"] == pytest.approx(results["test/acc"])
    assert {"val/acc", "train_eval/acc", "val/loss"} <= set(run.data.metrics)
    history = client.get_metric_history(run.info.run_id, "val/acc")
    assert len(history) == 2  # one per epoch
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "results.json", "pictures"} <= artifacts
    pictures = {a.path for a in client.list_artifacts(run.info.run_id, "pictures")}
    expected = {f"pictures/{p.relative_to(logged_run).as_posix()}" for p in run_pictures(logged_run)}  # fmt: skip
    assert "pictures/learning_curves.png" in expected and pictures == expected
    config_file = client.download_artifacts(run.info.run_id, "config.yaml", str(logged_run.parent))
    config = yaml.safe_load(Path(config_file).read_text())
    assert config == yaml.safe_load((logged_run / "config.yaml").read_text())


def test_wandb_offline_run_holds_config_metrics_and_pictures(logged_run: Path) -> None:
    (offline,) = (logged_run / "wandb").glob("offline-run-*")
    files = offline / "files"
    assert (files / "config.yaml").resolve() == (logged_run / "config.yaml").resolve()
    assert (files / "results.json").is_file()
    images = sorted(p.name for p in (files / "media" / "images" / "pictures").glob("*.png"))
    stems = sorted(p.stem for p in run_pictures(logged_run))
    assert len(images) == len(stems) and all(i.startswith(s) for i, s in zip(images, stems, strict=True))  # fmt: skip
    (record,) = offline.glob("run-*.wandb")  # the binary run log: metrics and the config inside
    data = record.read_bytes()
    assert b"val/acc" in data and b"train_eval/acc" in data and b"mobilenet" in data


def test_tensorboard_and_a_plugin_logger_receive_the_run_files(tmp_path: Path) -> None:
    """In-process: pictures outside the loggers' own folders, TensorBoard images and text, and
    ``log_run_files`` for any other logger."""
    pytest.importorskip("tensorboard")
    from pytorch_lightning.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    for rel in ("learning_curves.png", "overlays/epoch000_0.png", "wandb/media/x.png", "mlflow/y.png"):  # fmt: skip
        (run / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((6, 9, 3), 40, np.uint8)).save(run / rel)
    (run / "results.json").write_text(json.dumps({"val/acc": 0.5}))
    assert [p.relative_to(run).as_posix() for p in run_pictures(run)] == ["learning_curves.png", "overlays/epoch000_0.png"]  # fmt: skip

    class PluginLogger:
        def log_run_files(self, config: dict, files: list[Path], run_dir: Path) -> None:
            self.received = (config, [p.name for p in files], run_dir)

    tb = TensorBoardLogger(save_dir=str(run), name="tensorboard", version="")
    plugin = PluginLogger()
    publish_run([tb, plugin], run, {"model": {"backbone": {"name": "simple_cnn"}}})
    assert plugin.received == ({"model": {"backbone": {"name": "simple_cnn"}}}, ["results.json", "learning_curves.png", "epoch000_0.png"], run)  # fmt: skip
    events = EventAccumulator(tb.log_dir, size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    assert set(events.Tags()["images"]) == {"pictures/learning_curves", "pictures/overlays/epoch000_0"}  # fmt: skip
    image = events.Images("pictures/learning_curves")[0]
    assert (image.width, image.height) == (9, 6)
    assert {"config/text_summary", "results/text_summary"} <= set(events.Tags()["tensors"])
