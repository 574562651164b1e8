"""The Registry class: name -> builder, with aliases, sources, suggestions and lazy entries.

A registry maps a key to a callable (class or function). Entries can be registered eagerly
(decorator or call) or lazily as a ``"module:attr"`` string, so that listing a registry does not
import heavy modules (e.g. pytorch_lightning for tasks and datamodules).
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
import importlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from visionkit.errors import RegistryError


@functools.cache
def _distributions() -> dict[str, list[str]]:
    from importlib.metadata import packages_distributions

    return packages_distributions()


@functools.cache
def source_of(module: str) -> str:
    """The distribution that ships ``module`` (e.g. ``visionkit``), else the module name itself.

    Editable installs list no files, so a distribution named like the top-level package (with
    ``_``/``-`` equivalent) is accepted too.
    """
    from importlib.metadata import PackageNotFoundError, distribution

    top = module.split(".", 1)[0]
    dists = _distributions().get(top)
    if dists:
        return dists[0]
    try:
        return distribution(top).metadata["Name"]
    except PackageNotFoundError:
        return module


@dataclass
class Entry:
    """One registered object: the callable (or its lazy ``module:attr`` target) and its source."""

    name: str
    target: Any
    source: str
    aliases: tuple[str, ...] = ()

    def load(self) -> Any:
        if isinstance(self.target, str):
            module, _, attr = self.target.partition(":")
            self.target = getattr(importlib.import_module(module), attr)
        return self.target


class Registry:
    """A named family of builders, e.g. ``NORMS``; ``contract`` documents the callable signature."""

    def __init__(self, name: str, contract: str = "", check: Callable[[Any], None] | None = None):
        self.name = name
        self.contract = contract
        self._check = check
        self._entries: dict[str, Entry] = {}
        self._aliases: dict[str, str] = {}

    # -- registration -------------------------------------------------------------------------
    def register(
        self,
        obj: Any = None,
        *,
        name: str | None = None,
        aliases: Iterable[str] = (),
        override: bool = False,
    ) -> Any:
        """Register ``obj`` under ``name`` (default: its ``__name__``); works as a decorator.

        ``REG.register(name="x")`` and ``REG.register("x")`` return a decorator; ``REG.register(fn)``
        registers ``fn`` directly. A lazy target is a ``"module:attr"`` string.
        """
        if isinstance(obj, str) and ":" not in obj:  # register("name") used as a decorator factory
            name, obj = obj, None
        if obj is None:
            return lambda o: self.register(o, name=name, aliases=aliases, override=override)
        if isinstance(obj, str):
            key = name or obj.rpartition(":")[2]
            source = source_of(obj.partition(":")[0])
        else:
            key = name or obj.__name__
            source = source_of(getattr(obj, "__module__", None) or "__main__")
        self._add(Entry(key, obj, source, tuple(aliases)), override)
        return obj

    def _add(self, entry: Entry, override: bool) -> None:
        for key in (entry.name, *entry.aliases):
            existing = self._entry_or_none(key)
            if existing is not None and existing.source != entry.source and not override:
                raise RegistryError(
                    f"{self.name}: '{key}' is already registered by '{existing.source}'; "
                    f"'{entry.source}' registers it again. Pass override=True to replace it."
                )
            if existing is not None:
                self._remove(existing)
        self._entries[entry.name] = entry
        for alias in entry.aliases:
            self._aliases[alias] = entry.name

    def _remove(self, entry: Entry) -> None:
        self._entries.pop(entry.name, None)
        for alias in entry.aliases:
            self._aliases.pop(alias, None)

    # -- lookup -------------------------------------------------------------------------------
    def _entry_or_none(self, name: str) -> Entry | None:
        return self._entries.get(self._aliases.get(name, name))

    def entry(self, name: str) -> Entry:
        """The Entry for ``name`` or an alias; unknown names raise with the closest matches."""
        entry = self._entry_or_none(name)
        if entry is None:
            choices = sorted([*self._entries, *self._aliases])
            close = difflib.get_close_matches(str(name), choices, n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise RegistryError(
                f"unknown {self.name.lower()} '{name}'.{hint} "
                f"List them with: python -m visionkit list {self.name.lower()}"
            )
        return entry

    def get(self, name: str) -> Any:
        """The registered callable for ``name``."""
        return self.entry(name).load()

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._entry_or_none(name) is not None

    def __iter__(self):
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def names(self, pattern: str = "*") -> list[str]:
        """Sorted registered names matching the fnmatch ``pattern`` (aliases excluded)."""
        return sorted(n for n in self._entries if fnmatch.fnmatchcase(n, pattern))

    def source(self, name: str) -> str:
        """The distribution (or module) that registered ``name``."""
        return self.entry(name).source

    # -- building -----------------------------------------------------------------------------
    def build(self, spec: Any, *args: Any, **kwargs: Any) -> Any:
        """Build from a name, a ``{"name": ..., **kw}`` mapping, a class/callable or a partial.

        Keyword arguments in the spec are overridden by ``kwargs``; the result is checked against
        the family's contract.
        """
        fn, spec_kwargs = self.resolve(spec)
        obj = fn(*args, **{**spec_kwargs, **kwargs})
        if self._check is not None:
            self._check(obj)
        return obj

    def resolve(self, spec: Any) -> tuple[Callable[..., Any], dict[str, Any]]:
        """Split a spec into (callable, keyword arguments) without calling it."""
        if isinstance(spec, str):
            return self.get(spec), {}
        if isinstance(spec, Mapping) or _is_dictconfig(spec):
            spec = _to_dict(spec)
            if "name" not in spec:
                raise RegistryError(
                    f"{self.name}: a component spec needs a 'name' key, got keys {sorted(spec)}"
                )
            name = spec.pop("name")
            return self.get(name), spec
        if callable(spec):  # a class, function or functools.partial: its own kwargs survive
            return spec, {}
        raise RegistryError(
            f"{self.name}: cannot build from {spec!r}; give a registered name, a mapping with "
            "'name', a class or a callable"
        )

    def __repr__(self) -> str:
        return f"Registry({self.name!r}, {len(self)} entries)"


def _is_dictconfig(obj: Any) -> bool:
    return type(obj).__name__ == "DictConfig"


def _to_dict(spec: Any) -> dict[str, Any]:
    if _is_dictconfig(spec):
        from omegaconf import OmegaConf

        return OmegaConf.to_container(spec, resolve=True)  # type: ignore[return-value]
    return dict(spec)
