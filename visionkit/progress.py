"""Progress display for the long loops of commands outside training (``stats``, ``convert``,
``export``, ``report``), drawn by rich like training's progress bar.

Library code wraps its long loops in :func:`track` (and single long steps in :func:`status`)
unconditionally; nothing is drawn unless a command turned the display on with :func:`shown` and
stderr is a terminal. So logs, pipes and tests stay clean, training (whose bar is Lightning's)
is untouched, and a user silences a command with ``--quiet`` (convert, report) or
``progress=false`` (stats, export).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

T = TypeVar("T")
_SHOWN: ContextVar[bool] = ContextVar("visionkit_progress", default=False)


def is_terminal() -> bool:
    """Whether stderr, where the display goes, is a terminal."""
    return sys.stderr.isatty()


@contextmanager
def shown(enabled: bool = True) -> Iterator[None]:
    """Draw progress inside this block when ``enabled`` and stderr is a terminal."""
    token = _SHOWN.set(bool(enabled) and is_terminal())
    try:
        yield
    finally:
        _SHOWN.reset(token)


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterable[T]:
    """``items``, with a progress bar (count, rate, time left) while the display is shown."""
    if not _SHOWN.get():
        return items
    from rich.progress import track as rich_track

    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    return rich_track(items, description=description, total=total, console=_console())


@contextmanager
def status(description: str) -> Iterator[None]:
    """A spinner with ``description`` during one long step, while the display is shown."""
    if not _SHOWN.get():
        yield
        return
    with _console().status(description):
        yield
