"""Bad-data bookkeeping at setup: stop on the first problem (``on_bad=error``) or warn, skip and
count (``on_bad=skip``); nothing is dropped without being counted and reported.
"""

from __future__ import annotations

import itertools
import logging
import os
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from visionkit.data.images import ImageTooLargeError, open_image, oriented_size
from visionkit.errors import ConfigError, DataError

log = logging.getLogger(__name__)

ON_BAD = ("error", "skip")
VERIFY = ("none", "header", "full")


# appended to a DataError raised while a dataset loads a sample (a loader worker)
LOADING_HINT = (
    "found while loading; data.verify_images=full checks every file at setup, where "
    "data.on_bad=skip can skip it"
)


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
        """A structural error: raise DataError (error mode) or count it (skip mode), warning once
        per kind with its first example; the counts reach results.json (:meth:`to_dict`)."""
        if self.on_bad == "error":
            raise DataError(f"{message} (set data.on_bad=skip to skip such entries)")
        first = kind not in self.skipped
        self.skipped[kind] += 1
        self.examples.setdefault(kind, message)
        if first:
            warnings.warn(
                f"skipped ({kind}): {message}; further '{kind}' cases are counted in "
                "results.json under data.skipped, not repeated",
                BadDataWarning,
                stacklevel=2,
            )

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
        """Log the final count (the warnings were given once per kind as the problems came)."""
        if self.skipped:
            log.warning("bad data %s", self.summary())
        elif self.notes:
            log.info("data %s", self.summary())

    def to_dict(self) -> dict[str, Any]:
        """What results.json records under ``data``: counts per kind and one example each."""
        return {
            "on_bad": self.on_bad,
            "skipped_total": self.total_skipped,
            "skipped": dict(sorted(self.skipped.items())),
            "notes": dict(sorted(self.notes.items())),
            "examples": dict(sorted(self.examples.items())),
        }


def blocking_file(path: Path) -> Path | None:
    """The file (not folder) among ``path``'s ancestors that stops it being a folder, if any."""
    existing = next((p for p in Path(path).parents if p.exists()), None)
    return existing if existing is not None and not existing.is_dir() else None


# the built-in formats that read their files from an existing data.root (shapes generates it,
# digits has none): runner.check_paths checks their root before torch and Lightning are imported
ROOT_FORMATS = ("coco", "imagefolder", "masks", "voc", "yolo")


def require_root(fmt: str, root: Path) -> Path:
    """``root`` as an existing folder, which data format ``fmt`` reads its files from, else one
    ConfigError saying why not (missing, a file, or under a file)."""
    if not root.is_dir():
        blocker = blocking_file(root)
        why = (
            f"{blocker} is a file"
            if blocker is not None
            else ("it is a file" if root.exists() else "it does not exist")
        )
        raise ConfigError(f"data format '{fmt}': data.root {root} is not a folder ({why})")
    return root


def check_verify(verify: str) -> str:
    """``verify`` if it is a known level, else ConfigError naming the key."""
    if verify not in VERIFY:
        raise ConfigError(f"data.verify_images must be one of {VERIFY}, got '{verify}'")
    return verify


@dataclass
class ImageCheck:
    """What setup learnt about one image file: its size (after EXIF orientation) or a problem."""

    path: Path
    size: tuple[int, int] | None = None  # (width, height); None when not opened or unreadable
    kind: str | None = None  # missing_image | empty_image | unreadable_image | image_too_large
    reason: str | None = None


def check_image_file(path: Path, verify: str, max_pixels: int | None = None) -> ImageCheck:
    """Check ``path`` at level ``verify``: ``none`` only that it exists; ``header`` parses the
    structure (PNG chunks and CRCs) and reads the size and pixel count; ``full`` also decodes
    every pixel (finds truncated JPEGs whose header parses)."""
    check_verify(verify)
    path = Path(path)
    if not path.is_file():
        return ImageCheck(path, kind="missing_image", reason=f"missing image file: {path}")
    if verify == "none":
        return ImageCheck(path)
    if path.stat().st_size == 0:
        return ImageCheck(path, kind="empty_image", reason=f"empty image file: {path}")
    try:
        with open_image(path, max_pixels) as im:
            if verify == "full":
                im.load()
                size = oriented_size(im, decoded=True)
            else:
                size = oriented_size(im)
                im.verify()  # directly after open: nothing above reads the pixel data
    except ImageTooLargeError as exc:
        return ImageCheck(path, kind="image_too_large", reason=str(exc))
    except DataError as exc:
        return ImageCheck(path, kind="unreadable_image", reason=str(exc))
    except (OSError, SyntaxError, ValueError) as exc:
        return ImageCheck(path, kind="unreadable_image",
                          reason=f"unreadable or truncated image {path}: {exc}")  # fmt: skip
    return ImageCheck(path, size=size)


T = TypeVar("T")
R = TypeVar("R")


def parallel_map(fn: Callable[[T], R], items: Iterable[T], chunk: int = 256) -> Iterator[R]:
    """``fn`` over ``items`` in a thread pool, results in input order (PIL decoding releases the
    GIL). Work is submitted ``chunk`` items at a time, so a consumer that stops at the first bad
    file (error mode) leaves at most one chunk running, not the whole dataset. Only a finished
    map waits for its threads: an abandoned one is closed wherever the garbage collector finds it,
    even inside ``threading``'s own lock while a thread starts, where joining deadlocked (a test
    worker hung); its running items finish in the background, its queued ones are cancelled."""
    iterator = iter(items)
    pool = ThreadPoolExecutor(max_workers=min(16, (os.cpu_count() or 1) + 2))
    finished = False
    try:
        while batch := list(itertools.islice(iterator, chunk)):
            yield from pool.map(fn, batch)
        finished = True
    finally:
        pool.shutdown(wait=finished, cancel_futures=not finished)


def check_image_files(
    paths: Iterable[Path], verify: str, max_pixels: int | None = None
) -> Iterator[ImageCheck]:
    """:func:`check_image_file` over ``paths`` in parallel, in order (with a progress bar in a
    command that shows one, :mod:`visionkit.progress`)."""
    from visionkit.progress import track

    check_verify(verify)
    total = len(paths) if isinstance(paths, list | tuple) else None
    checks = parallel_map(lambda p: check_image_file(p, verify, max_pixels), paths)
    return iter(track(checks, f"checking images ({verify})", total=total))
