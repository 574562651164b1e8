"""The Registry class: name -> builder, with aliases, sources, suggestions and lazy entries.

A registry maps a key to a callable (class or function). Entries can be registered eagerly
(decorator or call) or lazily as a ``"module:attr"`` string, so that listing a registry does not
import heavy modules (e.g. pytorch_lightning for tasks and datamodules).

Every supplier (distribution) of a name stays known: when two supply it, a bare lookup is an
error naming both, never decided by import order. A qualified ``"package:name"`` or a preference
(``Registry.prefer``, config key ``plugins.prefer.<name>``) chooses; ``override=True`` (a plugin
replacing a built-in on purpose) wins over the plain registrations of that name.
"""

from __future__ import annotations

import contextlib
import difflib
import fnmatch
import functools
import importlib
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from visionkit.errors import RegistryError


@functools.cache
def _first_supplier(top: str) -> str | None:
    """The first installed distribution that ships the top-level package ``top``: what
    ``importlib.metadata.packages_distributions()[top][0]`` gives, without parsing every
    distribution's file list (the torch wheel lists ~15,000 files; that took ~0.3 s CPU in every
    CLI process). The standard library's rule: top_level.txt, else the first part (or the stem)
    of each ``.py`` file listed; of a RECORD, only the lines a pattern finds can name ``top``
    (``top/...py`` or ``top.py``), so only those are parsed."""
    import csv
    from importlib.metadata import distributions
    from pathlib import PurePosixPath

    lines = re.compile(rf'^"?(?:\./)*{re.escape(top)}(?:/[^\n]*?)?\.py"?,[^\n]*$', re.M)
    for dist in distributions():
        declared = (dist.read_text("top_level.txt") or "").split()
        if declared:
            if top in declared:
                return dist.metadata["Name"]
            continue
        record = dist.read_text("RECORD")
        if record:
            rows = csv.reader(m.group(0) for m in lines.finditer(record))
            files: Iterable[PurePosixPath] = [PurePosixPath(row[0]) for row in rows if row]
        else:  # no RECORD: the file list the standard library reads instead (egg-info)
            files = dist.files or ()
        inferred = {
            f.parts[0] if len(f.parts) > 1 else f.with_suffix("").name
            for f in files
            if f.suffix == ".py"
        }
        if top in inferred:
            return dist.metadata["Name"]
    return None


@functools.cache
def source_of(module: str) -> str:
    """The distribution that ships ``module`` (e.g. ``visionkit``), else the module name itself.

    Editable installs list no files, so a distribution named like the top-level package (with
    ``_``/``-`` equivalent) is accepted too.
    """
    from importlib.metadata import PackageNotFoundError, distribution

    top = module.split(".", 1)[0]
    supplier = _first_supplier(top)
    if supplier:
        return supplier
    try:
        return distribution(top).metadata["Name"]
    except PackageNotFoundError:
        return module


@functools.cache
def version_of(source: str) -> str | None:
    """The installed version of distribution ``source`` (None for a module outside any)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(source)
    except (PackageNotFoundError, ValueError):
        return None


def supplier_label(source: str, version: str | None) -> str:
    """How a supplier is named in messages: ``"visionkit-example 0.1.0"``."""
    return f"{source} {version}" if version else source


def same_source(a: str, b: str) -> bool:
    """Distribution names compare as pip does: case, ``-``, ``_`` and ``.`` are equivalent."""
    return _normal(a) == _normal(b)


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass
class Entry:
    """One registered object: the callable (or its lazy ``module:attr`` target) and its source."""

    name: str
    target: Any
    source: str
    aliases: tuple[str, ...] = ()
    override: bool = False

    @property
    def supplier(self) -> str:
        """``"source version"`` (or just the source for a module outside any distribution)."""
        return supplier_label(self.source, version_of(self.source))

    def load(self) -> Any:
        if isinstance(self.target, str):
            module, _, attr = self.target.partition(":")
            self.target = getattr(importlib.import_module(module), attr)
        return self.target


@dataclass
class Recording:
    """What was registered while it was active (see ``recording``), so that it can be undone."""

    added: list[tuple[Registry, Entry, list[Entry]]] = field(default_factory=list)

    def rollback(self) -> None:
        """Remove every recorded entry and restore the same-source entries it replaced."""
        for registry, entry, replaced in reversed(self.added):
            registry._discard(entry)
            for old in replaced:
                registry._insert(old)
        self.added.clear()


_recordings: list[Recording] = []


@contextlib.contextmanager
def recording() -> Iterator[Recording]:
    """Record the registrations of every registry made inside the block (e.g. a plugin import)."""
    rec = Recording()
    _recordings.append(rec)
    try:
        yield rec
    finally:
        _recordings.remove(rec)


class Registry:
    """A named family of builders, e.g. ``NORMS``; ``contract`` documents the callable signature."""

    def __init__(self, name: str, contract: str = "", check: Callable[[Any], None] | None = None):
        self.name = name
        self.contract = contract
        self._check = check
        self._suppliers: dict[str, dict[str, Entry]] = {}  # name or alias -> {source: entry}
        self._prefer: dict[str, str] = {}  # name -> source chosen by the user
        self.fill: Callable[[], None] | None = None  # called once, before the first lookup

    def _filled(self) -> None:
        """Run ``fill`` (visionkit's registries: load built-ins and plugins) on the first lookup."""
        fill, self.fill = self.fill, None
        if fill is not None:
            fill()

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
        """Add ``entry`` beside the other sources' entries; it replaces only its own source's."""
        entry.override = override
        keys = (entry.name, *entry.aliases)
        if any(":" in key for key in keys):
            raise RegistryError(f"{self.name}: a name may not contain ':' (got {keys})")
        replaced = [self._suppliers[k].get(entry.source) for k in keys if k in self._suppliers]
        replaced = list({id(e): e for e in replaced if e is not None}.values())
        for old in replaced:
            self._discard(old)
        self._insert(entry)
        for rec in _recordings:
            rec.added.append((self, entry, replaced))

    def _insert(self, entry: Entry) -> None:
        for key in (entry.name, *entry.aliases):
            self._suppliers.setdefault(key, {})[entry.source] = entry

    def _discard(self, entry: Entry) -> None:
        for key in (entry.name, *entry.aliases):
            suppliers = self._suppliers.get(key, {})
            if suppliers.get(entry.source) is entry:
                del suppliers[entry.source]
            if not suppliers:
                self._suppliers.pop(key, None)

    def prefer(self, name: str, source: str) -> bool:
        """Resolve the bare ``name`` to ``source``'s entry; False when ``source`` does not supply it."""
        if not any(same_source(s, source) for s in self._suppliers.get(name, {})):
            return False
        self._prefer[name] = source
        return True

    # -- lookup -------------------------------------------------------------------------------
    def _entry_or_none(self, name: str) -> Entry | None:
        """The entry for a (possibly ``package:``-qualified) name; a clash raises, naming both."""
        self._filled()
        source, _, key = str(name).rpartition(":")
        suppliers = self._suppliers.get(key, {})
        chosen = source or self._prefer.get(key)
        if chosen:
            found = [e for s, e in suppliers.items() if same_source(s, chosen)]
            if found or source:
                return found[0] if found else None
        candidates = [e for e in suppliers.values() if e.override] or list(suppliers.values())
        candidates.sort(key=lambda e: e.source)
        if len(candidates) > 1:
            both = " and ".join(e.supplier for e in candidates)
            raise RegistryError(
                f"{self.name.lower()} '{key}' is supplied by {len(candidates)} packages: {both}; "
                f"choose one with a qualified name wherever the name is given (e.g. "
                f"'{candidates[0].source}:{key}') or with +plugins.prefer.{key}=<package>"
            )
        return candidates[0] if candidates else None

    def entry(self, name: str) -> Entry:
        """The Entry for ``name``, an alias or ``package:name``; unknown names raise with the
        closest matches, names supplied by several packages raise naming them."""
        entry = self._entry_or_none(name)
        if entry is None:
            source, _, key = str(name).rpartition(":")
            if source and key in self._suppliers:
                others = ", ".join(e.supplier for e in self.suppliers(key))
                raise RegistryError(
                    f"{self.name.lower()} '{key}' is not supplied by '{source}' but by {others}"
                )
            close = difflib.get_close_matches(key, sorted(self._suppliers), n=3, cutoff=0.5)
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
        """Whether any package supplies ``name`` (a clash still counts: looking it up explains)."""
        if not isinstance(name, str):
            return False
        self._filled()
        source, _, key = name.rpartition(":")
        return any(not source or same_source(s, source) for s in self._suppliers.get(key, {}))

    def __iter__(self):
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def names(self, pattern: str = "*") -> list[str]:
        """Sorted registered names matching the fnmatch ``pattern`` (aliases excluded)."""
        self._filled()
        return sorted(
            key
            for key, suppliers in self._suppliers.items()
            if any(e.name == key for e in suppliers.values()) and fnmatch.fnmatchcase(key, pattern)
        )

    def suppliers(self, name: str) -> list[Entry]:
        """Every package's entry for ``name``, sorted by source (several only on a clash)."""
        self._filled()
        return sorted(self._suppliers.get(name, {}).values(), key=lambda e: e.source)

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
