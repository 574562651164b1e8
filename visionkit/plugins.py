"""Loading built-in parts and entry-point plugins; plugin config directories for Hydra.

Entry-point group ``visionkit.plugins``: each entry point names a module (imported for its
registrations) or a zero-argument callable (called). Group ``visionkit.configs``: each entry point
names a package whose directory holds Hydra config groups; those become selectable by override.

A plugin that fails while loading is reported and leaves none of its parts registered. Two
packages supplying one name are both kept; config key ``plugins.prefer.<name>=<package>`` (or a
qualified ``package:name`` where the name is given) chooses, see ``visionkit.registries.registry``.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
import warnings
from collections.abc import Mapping
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

from visionkit.errors import ConfigError, PluginError

log = logging.getLogger(__name__)

PLUGIN_GROUP = "visionkit.plugins"
CONFIG_GROUP = "visionkit.configs"

# Modules whose import registers visionkit's own parts (each package imports its files).
BUILTIN_MODULES = (
    "visionkit.layers",
    "visionkit.models",
    "visionkit.losses",
    "visionkit.data",
    "visionkit.tasks",
    "visionkit.callbacks",
)

_loaded: dict[str, str | None] = {}  # "name (value)" of an entry point -> error or None
PREFER_KEY = "plugins.prefer"


def load_builtins() -> None:
    """Import every built-in module so its parts are registered."""
    for module in BUILTIN_MODULES:
        importlib.import_module(module)


def load_plugins(strict: bool = False) -> dict[str, str | None]:
    """Load every ``visionkit.plugins`` entry point once; report and skip broken ones.

    Returns ``{"name (value)": error or None}``. With ``strict`` a broken plugin raises PluginError.
    """
    for ep in sorted(entry_points(group=PLUGIN_GROUP), key=lambda ep: (ep.name, ep.value)):
        key = f"{ep.name} ({ep.value})"  # two packages may name their entry points alike
        if key not in _loaded:
            _loaded[key] = _load_one(ep)
        error = _loaded[key]
        if error is not None:
            message = f"plugin '{ep.name}' ({ep.value}) failed to load: {error}"
            if strict:
                raise PluginError(message)
            print(
                f"warning: {message}; skipped (plugins.strict=true makes this fatal)",
                file=sys.stderr,
            )
    return dict(_loaded)


def _load_one(ep: EntryPoint) -> str | None:
    """Load one entry point; on failure undo every registration it made and return the error."""
    from visionkit.registries.registry import recording

    with recording() as registered:
        try:
            obj = ep.load()
            if callable(obj):
                obj()
        except Exception as exc:  # noqa: BLE001 - a plugin's failure is reported, never hidden
            registered.rollback()
            return f"{type(exc).__name__}: {exc}"
    return None


def load_all(strict: bool = False, prefer: Mapping[str, str] | None = None) -> None:
    """Built-ins first, then plugins (a plugin may override a built-in with override=True), then
    the user's choices ``prefer`` (name -> package) for names that several packages supply."""
    load_builtins()
    load_plugins(strict=strict)
    for name, package in (prefer or {}).items():
        apply_preference(str(name), str(package))


def load_configured(cfg: Any) -> None:
    """``load_all`` with the run config's ``plugins.strict`` and ``plugins.prefer``."""
    options = cfg.get("plugins") or {}
    load_all(strict=bool(options.get("strict", False)), prefer=dict(options.get("prefer") or {}))


def apply_preference(name: str, package: str) -> None:
    """Resolve the bare ``name`` to ``package``'s part in every registry where it supplies one."""
    from visionkit.registries import ALL

    if not [reg for reg in ALL.values() if reg.prefer(name, package)]:
        suppliers = sorted({e.source for reg in ALL.values() for e in reg.suppliers(name)})
        raise ConfigError(
            f"{PREFER_KEY}.{name}={package}: '{package}' supplies no part named '{name}' "
            f"(supplied by: {', '.join(suppliers) or 'nobody'})"
        )


def plugin_config_dirs() -> list[Path]:
    """Config directories shipped by installed plugins (``visionkit.configs`` entry points)."""
    dirs = []
    for ep in entry_points(group=CONFIG_GROUP):
        spec = importlib.util.find_spec(ep.value)
        if spec is None or not spec.submodule_search_locations:
            print(
                f"warning: plugin config package '{ep.value}' ({ep.name}) not found; skipped",
                file=sys.stderr,
            )
            continue
        dirs.extend(Path(p) for p in spec.submodule_search_locations)
    return dirs


def register_config_search_path() -> None:
    """Make installed plugins' config directories part of every Hydra app and compose call.

    Registered as a Hydra SearchPathPlugin, so it works for the CLI, the compose API and
    Lightning's DDP child processes alike, and leaves the user's ``hydra.searchpath`` untouched.
    """
    from hydra.core.config_search_path import ConfigSearchPath
    from hydra.core.plugins import Plugins
    from hydra.plugins.search_path_plugin import SearchPathPlugin

    # conf/hydra/sweeper/basic.yaml (the grid sweeper) shadows Hydra's structured `basic` on
    # purpose; Hydra 1.3 then merges the two and warns that this matching is deprecated. The
    # merge is what we want (hydra-core<1.4 is pinned), so that one message is not shown, by the
    # CLI or by a compose call.
    warnings.filterwarnings("ignore", r"\s*'hydra/sweeper/basic' is validated against ConfigStore schema", UserWarning)  # fmt: skip

    class VisionkitPluginConfigs(SearchPathPlugin):
        """Appends each ``visionkit.configs`` entry point's directory to the search path."""

        def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
            for directory in plugin_config_dirs():
                search_path.append(provider="visionkit-plugin", path=f"file://{directory}")

    if not any(
        c.__name__ == VisionkitPluginConfigs.__name__
        for c in Plugins.instance().discover(SearchPathPlugin)
    ):
        Plugins.instance().register(VisionkitPluginConfigs)


def conf_dir() -> Path:
    """visionkit's own config tree: inside the wheel (visionkit/conf) or the source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"visionkit config directory not found next to {here}")
