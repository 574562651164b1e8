"""Checkpoints are data, not code (CLI, as a user runs it): crafted pickles refused by every command
that reads one, resume across tasks refused, and the record of which package supplied each part."""

from __future__ import annotations

import os
import pathlib
from pathlib import Path

import pytest
import torch

from tests.conftest import CLI, FAST, command_args, readme_commands, run_cli
from tests.test_plugins import make_clashing_plugin


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A second installed supplier of ``squareplus`` (fake-vk-act 0.2) beside visionkit-example."""
    return make_clashing_plugin(tmp_path_factory.mktemp("site"))


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path, site: dict[str, str]) -> Path:
    """One short run with the example plugin's activation, chosen over the clash by config key;
    the README's SGD + warm-up cosine command, so that its optimizer and schedule states are in
    the checkpoints checked for plain data."""
    out = tmp_path_factory.mktemp("ckpt") / "run"
    (sgd,) = [c for c in readme_commands("Train each task") if "scheduler=warmup_cosine" in c]
    args = [*command_args(sgd), *FAST, "model.act=squareplus", "+plugins.prefer.squareplus=visionkit-example"]  # fmt: skip
    run_cli(*args, "test_after_fit=false", f"hydra.run.dir={out}", cwd=out.parent, data_dir=data_dir, env=site, check=True)  # fmt: skip
    return out


def test_checkpoint_is_plain_data_and_records_each_parts_supplier(run: Path) -> None:
    from importlib.metadata import version

    for name in ("best.ckpt", "last.ckpt"):
        path = run / "checkpoints" / name
        assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == []
    meta = torch.load(path, weights_only=True)["visionkit"]
    parts = {(p["family"], p["name"]): p for p in meta["suppliers"]}
    assert parts[("activations", "squareplus")] == {
        "family": "activations",
        "name": "squareplus",
        "package": "visionkit-example",
        "version": version("visionkit-example"),
        "keys": ["model.act", "model.backbone.act"],
    }
    ours = {"package": "visionkit", "version": version("visionkit")}
    for family, name in [("tasks", "classification"), ("backbones", "simple_cnn"),
                         ("heads", "linear"), ("norms", "bn"), ("losses", "cross_entropy")]:  # fmt: skip
        assert {k: parts[(family, name)][k] for k in ours} == ours, (family, name)


def test_part_now_supplied_by_another_package_warns_with_both(
    cli: CLI, run: Path, site: dict[str, str], tmp_path: Path
) -> None:
    ckpt = run / "checkpoints" / "last.ckpt"
    args = [f"ckpt_path={ckpt}", "+plugins.prefer.squareplus=fake-vk-act", *FAST, "hydra.run.dir=t"]
    proc = cli("test", *args, env=site)
    assert proc.returncode == 0, proc.stderr[-3000:]
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [
        f"warning: {ckpt}: activations 'squareplus' (model.act, model.backbone.act) was supplied "
        "by visionkit-example 0.1.0 when saved, here by fake-vk-act 0.2"
    ]
    assert (tmp_path / "t" / "results.json").is_file()


class WritesMarker:
    """Unpickling this runs ``Path.touch(marker)``: code, not data."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


@pytest.fixture(scope="module")
def crafted(run: Path) -> tuple[Path, Path]:
    """A real checkpoint with one object whose unpickling writes a marker file; proven live."""
    path, marker = run.parent / "crafted.ckpt", run.parent / "marker"
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    ckpt["visionkit"]["note"] = WritesMarker(marker)
    torch.save(ckpt, path)
    torch.load(path, weights_only=False)  # what an unsafe load would do
    assert marker.is_file()
    marker.unlink()
    return path, marker


@pytest.mark.parametrize("command", ["test", "predict", "resume", "pretrained"])
def test_crafted_pickle_is_refused_before_it_runs(
    cli: CLI, crafted: tuple[Path, Path], tmp_path: Path, command: str
) -> None:
    from PIL import Image

    path, marker = crafted
    Image.new("RGB", (32, 32)).save(tmp_path / "a.png")
    args, key, what = {
        "test": (["test", f"ckpt_path={path}"], "ckpt_path", "checkpoint"),
        "predict": (["predict", f"ckpt_path={path}", "input=a.png"], "ckpt_path", "checkpoint"),
        "resume": (["train", f"ckpt_path={path}", *FAST], "ckpt_path", "checkpoint"),
        "pretrained": (["train", f"model.backbone.pretrained={path}", *FAST],
                       "model.backbone.pretrained", "pretrained weights"),
    }[command]  # fmt: skip
    proc = cli(*args, "hydra.run.dir=r")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert [line for line in proc.stderr.splitlines() if line.strip()] == [
        f"error: refusing to load {what} {path} (config key {key}): it holds objects that are not "
        "plain data (Unsupported global: GLOBAL getattr), and unpickling them could run code; "
        "visionkit loads checkpoints only with torch.load(weights_only=True)"
    ]
    assert not marker.exists()


def test_resume_from_a_checkpoint_of_another_task_is_one_error(cli: CLI, run: Path) -> None:
    ckpt = run / "checkpoints" / "last.ckpt"
    proc = cli("train", "task=detection", f"ckpt_path={ckpt}", *FAST, "hydra.run.dir=r")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: checkpoint {ckpt} is from task 'classification', but this run's task is "
        f"'detection' (config keys ckpt_path, task): resume it with task=classification, or take "
        f"only its backbone with model.backbone.pretrained={ckpt}"
    ]


def test_missing_damaged_or_foreign_files_are_one_error_naming_them(tmp_path: Path) -> None:
    from visionkit.checkpoints import load, meta
    from visionkit.errors import ConfigError

    with pytest.raises(ConfigError, match=r"checkpoint not found: .*none\.ckpt \(config key ckpt_path\)"):  # fmt: skip
        load(tmp_path / "none.ckpt")
    torch.save({"state_dict": {"w": torch.zeros(64, 64)}}, tmp_path / "full.ckpt")
    (tmp_path / "cut.ckpt").write_bytes((tmp_path / "full.ckpt").read_bytes()[:2000])
    (tmp_path / "text.ckpt").write_text("not a checkpoint")
    for name, start in (("cut.ckpt", "cannot read"), ("text.ckpt", "refusing to load")):
        with pytest.raises(ConfigError) as err:
            load(tmp_path / name, key="model.backbone.pretrained", what="pretrained weights")
        where = f"pretrained weights {tmp_path / name} (config key model.backbone.pretrained): "
        assert str(err.value).startswith(f"{start} {where}"), str(err.value)
    with pytest.raises(ConfigError, match=r"full\.ckpt is not a visionkit checkpoint"):
        meta(load(tmp_path / "full.ckpt"), tmp_path / "full.ckpt")


class RunsShell:
    """Unpickling this runs a shell command that writes ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol", [2, 4])
def test_plain_pickle_running_a_shell_command_is_refused(tmp_path: Path, protocol: int) -> None:
    import pickle

    from visionkit.checkpoints import load
    from visionkit.errors import ConfigError

    path, marker = tmp_path / "shell.ckpt", tmp_path / "marker"
    path.write_bytes(pickle.dumps({"state_dict": RunsShell(marker)}, protocol=protocol))
    pickle.loads(path.read_bytes())  # what an unsafe load would do
    assert marker.is_file()
    marker.unlink()
    with pytest.raises(ConfigError) as err:
        load(path)
    assert str(err.value).startswith(f"refusing to load checkpoint {path} (config key ckpt_path): ")
    assert not marker.exists()


def test_resume_with_a_model_that_does_not_fit_is_one_error(cli: CLI, run: Path) -> None:
    """The run's overrides are restored; a changed weight shape names the differing key, not
    Lightning's state-dict dump."""
    ckpt = run / "checkpoints" / "last.ckpt"
    proc = cli(
        "train", f"ckpt_path={ckpt}", "model.backbone.channels=[8,16,32,64]", "hydra.run.dir=r"
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: checkpoint {ckpt} does not fit the model of this run's config")
    assert "model.backbone.channels: [16, 32, 64, 128] (checkpoint) vs [8, 16, 32, 64]" in line


def test_resume_fits_checks_classes_and_warns_about_shapeless_changes(capsys) -> None:
    from types import SimpleNamespace

    from visionkit.checkpoints import check_resume_fits
    from visionkit.errors import ConfigError

    weights = {"w": torch.zeros(2, 3)}
    saved = {"model": {"act": "relu", "head": {"name": "linear"}}, "label_map": {"ids": [1, 5]}}
    ckpt = {"hyper_parameters": saved, "state_dict": weights}

    def task(model: dict, ids: list[int], shape: tuple[int, ...] = (2, 3)) -> SimpleNamespace:
        hparams = {"model": model, "label_map": {"ids": ids}}
        return SimpleNamespace(hparams=hparams, state_dict=lambda: {"w": torch.zeros(shape)})

    check_resume_fits("c.ckpt", ckpt, task(saved["model"], [1, 5]))
    assert capsys.readouterr().err == ""
    check_resume_fits("c.ckpt", ckpt, task({**saved["model"], "act": "gelu"}, [1, 5]))
    assert "model.act: 'relu' (checkpoint) vs 'gelu' (this run)" in capsys.readouterr().err
    with pytest.raises(
        ConfigError, match=r"category ids \[1, 5\], but this run's data has \[1, 6\]"
    ):
        check_resume_fits("c.ckpt", ckpt, task(saved["model"], [1, 6]))
    with pytest.raises(ConfigError, match="does not fit"):
        check_resume_fits("c.ckpt", ckpt, task(saved["model"], [1, 5], (3, 3)))
    check_resume_fits("last", {}, task({}, []))  # Lightning's keywords: nothing to compare
