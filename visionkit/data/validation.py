"""Bad-data bookkeeping at setup: stop on the first problem (``on_bad=error``) or warn, skip and
count (``on_bad=skip``); nothing is dropped without being counted and reported.
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from visionkit.errors import ConfigError, DataError

log = logging.getLogger(__name__)

ON_BAD = ("error", "skip")
VERIFY = ("none", "header", "full")


class BadDataWarning(UserWarning):
    """A bad sample or annotation skipped because ``data.on_bad=skip``."""


class BadDataReport:
    """Collects problems by kind; ``problem`` raises in error mode, counts and warns in skip mode."""

    def __init__(self, on_bad: str = "error", source: str = "") -> None:
        if on_bad not in ON_BAD:
            raise ConfigError(f"data.on_bad must be one of {ON_BAD}, got '{on_bad}'")
        self.on_bad = on_bad
        self.source = source
        self.skipped: Counter[str] = Counter()  # problems that removed an image or annotation
        self.notes: Counter[str] = Counter()  # harmless facts (negatives, converted modes)
        self.examples: dict[str, str] = {}

    def problem(self, kind: str, message: str) -> None:
        """A structural error: raise DataError (error mode) or count and warn (skip mode)."""
        if self.on_bad == "error":
            raise DataError(f"{message} (set data.on_bad=skip to skip such entries)")
        self.skipped[kind] += 1
        self.examples.setdefault(kind, message)
        warnings.warn(f"skipped: {message}", BadDataWarning, stacklevel=2)

    def note(self, kind: str, message: str = "") -> None:
        """Something kept but worth knowing (image without annotations, converted image mode)."""
        self.notes[kind] += 1
        if message:
            self.examples.setdefault(kind, message)

    @property
    def total_skipped(self) -> int:
        return sum(self.skipped.values())

    def summary(self) -> str:
        """One line: what was skipped and noted, with counts."""
        where = f"{self.source}: " if self.source else ""
        skipped = ", ".join(f"{k}={v}" for k, v in sorted(self.skipped.items())) or "nothing"
        notes = ", ".join(f"{k}={v}" for k, v in sorted(self.notes.items()))
        return f"{where}skipped {skipped}" + (f"; kept {notes}" if notes else "")

    def finish(self) -> None:
        """Report the final count (a warning when anything was skipped)."""
        if self.skipped:
            warnings.warn(f"bad data {self.summary()}", BadDataWarning, stacklevel=2)
        elif self.notes:
            log.info("data %s", self.summary())


def check_image_file(path: Path, verify: str) -> str | None:
    """None when ``path`` looks readable at level ``verify`` (none|header|full), else the reason;
    ``header`` parses the file structure (PNG chunks and CRCs), ``full`` decodes every pixel."""
    if verify not in VERIFY:
        raise ConfigError(f"data.verify_images must be one of {VERIFY}, got '{verify}'")
    if not path.is_file():
        return f"missing image file: {path}"
    if verify == "none":
        return None
    try:
        with Image.open(path) as im:
            if verify == "full":
                im.load()
            else:
                im.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return f"unreadable or truncated image {path}: {exc}"
    return None
