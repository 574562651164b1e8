"""Atomic file writing: a crash (SIGKILL, power loss) never leaves a half-written output file.

``results.json``, ``detections.json``, checkpoints and the resumed ``metrics.csv`` are written
through :func:`atomic_open`: into a temporary file in the same directory, flushed to disk, then
renamed over the target with ``os.replace`` (atomic on POSIX and Windows within one filesystem).
Readers see either the old file or the new one, never a mix.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """``open(path, mode)`` that replaces ``path`` only when the ``with`` block succeeds.

    ``mode`` is a write mode ("w" or "wb"); other ``open`` keywords pass through. On any error
    inside the block the temporary file is removed and ``path`` is left as it was.
    """
    if "w" not in mode or "+" in mode:
        raise ValueError(f"atomic_open writes a whole file: mode 'w' or 'wb', got '{mode}'")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # same directory (so the rename stays on one filesystem); "x": normal umask permissions
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, mode.replace("w", "x"), **kwargs) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
