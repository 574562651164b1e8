"""``python -m visionkit analyze`` as a user runs it: table on stdout, JSON and CSV in the run dir."""

from __future__ import annotations

import csv
import json

from tests.conftest import command_args, readme_commands


def test_analyze_vgg_cli(cli, tmp_path) -> None:
    """The README's command as written, a smaller VGG with other blocks appended."""
    (command,) = readme_commands("Inspect a model")
    out = tmp_path / "run"
    proc = cli(
        *command_args(command), "model.backbone.channels=[4,8,8]", "model.backbone.depths=[1,1,1]",
        "model.norm=gn", "model.act=hswish", f"hydra.run.dir={out}", check=True,
    )  # fmt: skip
    assert "MaxPool2dWithIndices" in proc.stdout and "HardSwish" in proc.stdout
    data = json.loads((out / "analysis.json").read_text())
    assert data["input_size"] == [3, 64, 64] and data["backbone"]["name"] == "vgg"
    last = data["layers"][-1]
    assert last["output_shape"] == [1, 8, 8, 8] and last["jump"] == [8, 8]
    assert data["total_params"] == sum(row["params"] for row in data["layers"]) > 0
    rows = list(csv.DictReader((out / "analysis.csv").open()))
    assert len(rows) == len(data["layers"]) and rows[0]["type"] == "Conv2d"


def test_analyze_run_refuses_bad_config(tmp_path) -> None:
    """User mistakes raise ConfigError (the dispatcher prints them as one line); in-process."""
    import pytest
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from visionkit.commands.analyze import run
    from visionkit.errors import ConfigError
    from visionkit.plugins import conf_dir

    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose("analyze", overrides=["model/backbone=vgg", "model.backbone.depths=[1]"])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
    with pytest.raises(ConfigError, match="vgg: channels"):
        run(cfg)
    cfg.model.backbone.depths = [1, 1, 1, 1, 1]
    cfg.input_size = [3, 32]
    with pytest.raises(ConfigError, match="input_size"):
        run(cfg)
