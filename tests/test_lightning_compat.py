"""visionkit.lightning_compat: the private Lightning names it relies on still exist, unchanged."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest

from visionkit import lightning_compat

PACKAGE = Path(lightning_compat.__file__).resolve().parent


@pytest.mark.parametrize(("target", "method", "params"), lightning_compat.PRIVATE_NAMES)
def test_private_names_exist(target: str, method: str, params: tuple[str, ...]) -> None:
    module, _, cls_name = target.partition(":")
    cls = getattr(importlib.import_module(module), cls_name)
    fn = getattr(cls, method, None)
    assert callable(fn), f"{target}.{method} is gone: visionkit.lightning_compat must change"
    got = tuple(p for p in inspect.signature(fn).parameters if p != "self")
    assert got == params, f"{target}.{method} now takes {got}, not {params}"


@pytest.mark.parametrize(("target", "attributes"), lightning_compat.PRIVATE_ATTRIBUTES)
def test_private_attributes_exist(target: str, attributes: tuple[str, ...]) -> None:
    module, _, cls_name = target.partition(":")
    instance = getattr(importlib.import_module(module), cls_name)()
    missing = [a for a in attributes if not hasattr(instance, a)]
    assert not missing, f"{target} no longer has {missing}: visionkit.lightning_compat must change"


def test_no_other_module_touches_lightning_private_names() -> None:
    """Only lightning_compat calls the private names it isolates; no module reads a private
    attribute of a trainer, strategy or loop, or sets ``fit_loop.max_epochs``."""
    names = "|".join(re.escape(m) for _, m, _ in lightning_compat.PRIVATE_NAMES)
    names += "".join(f"|{re.escape(a)}" for _, attrs in lightning_compat.PRIVATE_ATTRIBUTES for a in attrs)  # fmt: skip
    pattern = re.compile(
        rf"\.({names})\b|[\"']_trainer[\"']|\b(trainer|strategy|fit_loop|loop)\._[a-z]"
        r"|fit_loop\.max_epochs\s*="
    )
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}:{i}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "lightning_compat.py"
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not offenders, offenders
