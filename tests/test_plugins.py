"""Entry-point plugins as a user meets them: the installed example plugin, a broken one, strict mode."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import CLI, command_args, readme_commands

# the README's "Add a plugin" commands: list activations 'sq*', the backbone, the experiment
LIST, BACKBONE, EXPERIMENT = readme_commands("Add a plugin")


def make_plugin(
    root: Path, dist: str, module: str, code: str, version: str = "0.1"
) -> dict[str, str]:
    """An installed distribution ``dist`` whose visionkit.plugins entry point imports ``module``
    (source ``code``); returns the env that puts it on the path of a CLI subprocess."""
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{module}.py").write_text(code)
    info = root / f"{module}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(
        f"[visionkit.plugins]\n{module.split('_')[0]} = {module}\n"
    )
    (info / "top_level.txt").write_text(f"{module}\n")
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}


def make_broken_plugin(root: Path) -> dict[str, str]:
    """A plugin that registers an activation, then raises on import."""
    code = (
        "from torch import nn\nfrom visionkit import ACTIVATIONS\n\n"
        "@ACTIVATIONS.register('half_made')\nclass HalfMade(nn.Identity):\n    pass\n\n"
        "raise RuntimeError('boom from the plugin')\n"
    )
    return make_plugin(root, "broken-vk-plugin", "broken_vk_plugin", code)


# a second supplier of the example plugin's `squareplus` (the class name tells them apart)
FAKE_SQUAREPLUS = (
    "from torch import nn\nfrom visionkit import ACTIVATIONS\n\n"
    "@ACTIVATIONS.register('squareplus')\nclass FakeSquareplus(nn.ReLU):\n    pass\n"
)


def make_clashing_plugin(root: Path) -> dict[str, str]:
    """Distribution ``fake-vk-act`` 0.2, supplying ``squareplus`` as visionkit-example does."""
    return make_plugin(root, "fake-vk-act", "fake_vk_act", FAKE_SQUAREPLUS, version="0.2")


def test_example_plugin_parts_are_listed_with_their_distribution(cli: CLI) -> None:
    proc = cli("list", check=True)
    lines = proc.stdout.splitlines()
    assert "activations squareplus visionkit-example" in lines
    assert "backbones example_net visionkit-example" in lines
    assert "backbones simple_cnn visionkit" in lines
    assert lines == sorted(lines)
    assert all(len(line.split()) == 3 for line in lines)


def test_list_filters_by_family_and_pattern(cli: CLI) -> None:
    """The README's `list activations 'sq*'` and `list backbones`."""
    proc = cli(*command_args(LIST), check=True)
    assert proc.stdout.split() == ["activations", "squareplus", "visionkit-example"]
    (backbones,) = [c for c in readme_commands("Train each task") if " list " in c]
    lines = cli(*command_args(backbones), check=True).stdout.splitlines()
    assert {"backbones example_net visionkit-example", "backbones simple_cnn visionkit"} <= set(
        lines
    )
    assert all(line.startswith("backbones ") for line in lines)


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


def test_registries_fill_themselves_on_first_lookup() -> None:
    """`import visionkit` is all a library user writes: built-ins and plugins load on the first
    lookup in any registry, still without importing Lightning."""
    import subprocess
    import sys

    code = (
        "import sys, visionkit;"
        "assert 'visionkit.layers.act' not in sys.modules, 'built-ins loaded on import';"
        "print(visionkit.ACTIVATIONS.get('hswish').__name__);"
        "print('squareplus' in visionkit.ACTIVATIONS, visionkit.TASKS.names());"
        "assert 'pytorch_lightning' not in sys.modules, 'lightning imported'"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "HardSwish"
    assert lines[1].startswith("True ['classification', 'detection',")


def test_broken_plugin_is_reported_and_skipped(cli: CLI, tmp_path: Path) -> None:
    env = make_broken_plugin(tmp_path / "site")
    proc = cli("list", "activations", env=env)
    assert proc.returncode == 0, proc.stderr
    assert (
        "plugin 'broken' (broken_vk_plugin) failed to load: RuntimeError: boom from the plugin"
        in proc.stderr
    )
    assert "activations squareplus visionkit-example" in proc.stdout  # the good plugin still loads
    assert "half_made" not in proc.stdout  # registered before the plugin failed: rolled back


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
    proc = cli(*command_args(BACKBONE), *fast, "hydra.run.dir=run", check=True)
    cfg = (tmp_path / "run" / "config.yaml").read_text()
    assert "name: example_net" in cfg and "act: squareplus" in cfg
    assert (tmp_path / "run" / "results.json").is_file(), proc.stdout


def test_plugin_experiment_is_selectable_and_trains(cli: CLI, fast: list[str], tmp_path: Path) -> None:  # fmt: skip
    cli(*command_args(EXPERIMENT), *fast, "hydra.run.dir=run", check=True)
    assert "act: squareplus" in (tmp_path / "run" / "config.yaml").read_text()
    assert (tmp_path / "run" / "results.json").is_file()


def test_failed_plugin_import_leaves_none_of_its_parts(tmp_path: Path, monkeypatch) -> None:
    from importlib.metadata import EntryPoint

    from visionkit.plugins import PLUGIN_GROUP, _load_one, load_builtins
    from visionkit.registries import ACTIVATIONS, NORMS

    load_builtins()
    (tmp_path / "vk_half_plugin.py").write_text(
        "from torch import nn\nfrom visionkit import ACTIVATIONS, NORMS\n"
        "ACTIVATIONS.register(nn.ReLU, name='half_act')\n"
        "ACTIVATIONS.register(nn.GELU, name='relu', override=True)\n"  # replaces a built-in
        "NORMS.register(nn.BatchNorm2d, name='half_norm')\n"
        "raise ValueError('half way')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    relu, norms = ACTIVATIONS.get("relu"), NORMS.names()
    ep = EntryPoint(name="half", value="vk_half_plugin", group=PLUGIN_GROUP)
    assert _load_one(ep) == "ValueError: half way"
    assert "half_act" not in ACTIVATIONS and "half_norm" not in NORMS
    assert ACTIVATIONS.get("relu") is relu and NORMS.names() == norms


def test_prefer_naming_a_package_that_does_not_supply_the_name_is_an_error() -> None:
    from visionkit.errors import ConfigError
    from visionkit.plugins import apply_preference, load_all

    load_all()
    with pytest.raises(ConfigError) as err:
        apply_preference("squareplus", "other-pkg")
    assert str(err.value) == (
        "plugins.prefer.squareplus=other-pkg: 'other-pkg' supplies no part named 'squareplus' "
        "(supplied by: visionkit-example)"
    )


def test_clash_is_an_error_and_a_qualified_name_chooses(cli: CLI, tmp_path: Path) -> None:
    env = make_clashing_plugin(tmp_path / "site")
    proc = cli("analyze", "model.act=squareplus", "hydra.run.dir=a", env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: activations 'squareplus' is supplied by 2 packages: fake-vk-act 0.2 and "
        "visionkit-example 0.1.0; choose one with a qualified name wherever the name is given "
        "(e.g. 'fake-vk-act:squareplus') or with +plugins.prefer.squareplus=<package>"
    )
    proc = cli("analyze", "model.act=fake-vk-act:squareplus", "hydra.run.dir=b", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "FakeSquareplus" in proc.stdout and " Squareplus " not in proc.stdout
