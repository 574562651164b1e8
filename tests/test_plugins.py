"""Entry-point plugins as a user meets them: the installed example plugin, a broken one, strict mode."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import CLI


def make_broken_plugin(root: Path) -> dict[str, str]:
    """A distribution whose visionkit.plugins entry point raises on import; returns env for it."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "broken_vk_plugin.py").write_text("raise RuntimeError('boom from the plugin')\n")
    info = root / "broken_vk_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-vk-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[visionkit.plugins]\nbroken = broken_vk_plugin\n")
    return {"PYTHONPATH": str(root)}


def test_example_plugin_parts_are_listed_with_their_distribution(cli: CLI) -> None:
    proc = cli("list", check=True)
    lines = proc.stdout.splitlines()
    assert "activations squareplus visionkit-example" in lines
    assert "backbones example_net visionkit-example" in lines
    assert "backbones simple_cnn visionkit" in lines
    assert lines == sorted(lines)
    assert all(len(line.split()) == 3 for line in lines)


def test_list_filters_by_family_and_pattern(cli: CLI) -> None:
    proc = cli("list", "activations", "sq*", check=True)
    assert proc.stdout.split() == ["activations", "squareplus", "visionkit-example"]


def test_list_unknown_family_suggests(cli: CLI) -> None:
    proc = cli("list", "norm")
    assert proc.returncode == 2
    assert "unknown family 'norm'. Did you mean 'norms'?" in proc.stderr


def test_list_does_not_import_lightning() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from visionkit.commands.list import main; main(['tasks']);"
        "assert 'pytorch_lightning' not in sys.modules, 'lightning imported';"
        "assert 'lightning' not in sys.modules, 'lightning imported'"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "tasks classification visionkit" in proc.stdout


def test_broken_plugin_is_reported_and_skipped(cli: CLI, tmp_path: Path) -> None:
    env = make_broken_plugin(tmp_path / "site")
    proc = cli("list", "activations", env=env)
    assert proc.returncode == 0, proc.stderr
    assert (
        "plugin 'broken' (broken_vk_plugin) failed to load: RuntimeError: boom from the plugin"
        in proc.stderr
    )
    assert "activations squareplus visionkit-example" in proc.stdout  # the good plugin still loads


def test_broken_plugin_is_fatal_in_strict_mode(cli: CLI, tmp_path: Path) -> None:
    env = make_broken_plugin(tmp_path / "site")
    proc = cli("list", "--strict", env=env)
    assert proc.returncode != 0
    assert "boom from the plugin" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.fixture
def broken_site(tmp_path: Path) -> dict[str, str]:
    return make_broken_plugin(tmp_path / "site")


def test_strict_override_stops_a_hydra_command(
    cli: CLI, broken_site: dict[str, str], fast: list[str]
) -> None:
    proc = cli("train", "plugins.strict=true", *fast, "hydra.run.dir=run", env=broken_site)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: plugin 'broken'")
    assert "Traceback" not in proc.stderr


def test_plugin_config_is_selectable_and_its_backbone_trains(
    cli: CLI, fast: list[str], tmp_path: Path
) -> None:
    proc = cli("train", "model/backbone=example_net", *fast, "hydra.run.dir=run", check=True)
    cfg = (tmp_path / "run" / "config.yaml").read_text()
    assert "name: example_net" in cfg and "act: squareplus" in cfg
    assert (tmp_path / "run" / "results.json").is_file(), proc.stdout


def test_plugin_experiment_is_selectable(cli: CLI) -> None:
    proc = cli("train", "experiment=example_squareplus", "--cfg", "job", check=True)
    assert "act: squareplus" in proc.stdout
