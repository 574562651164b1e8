"""glibc's malloc set to keep freed memory for reuse, as PyTorch's CPU tuning guide advises (there
by preloading jemalloc or tcmalloc). By default glibc hands large blocks back to the system when
they are freed, so every batch's activations and gradients come back as fresh pages, each paid for
by a page fault: 20,000-50,000 faults per 400 images in batched prediction, half of a CPU training
run's system time. Called once by ``python -m visionkit`` and by ``visionkit.load``.

Set ``VISIONKIT_MALLOC=system`` to leave malloc as it is (``keep``, the default, sets it); glibc's
own ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` (or ``GLIBC_TUNABLES`` with malloc
settings) take precedence as well.
"""

from __future__ import annotations

import ctypes
import os

from visionkit.errors import ConfigError

ENV = "VISIONKIT_MALLOC"
# blocks up to this size come from the heap (glibc's largest allowed value on 64-bit: 32 MiB);
# larger ones are mapped and unmapped each time as before
MMAP_THRESHOLD = 32 * 1024 * 1024
# free memory kept at the top of the heap before glibc returns it (its default: 128 KiB, raised
# with the dynamic mmap threshold): the process keeps up to this much beyond what it uses
TRIM_THRESHOLD = 1024 * 1024 * 1024
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds (once per process; a forked loader worker inherits
    them). Returns whether they are set: False off glibc, with ``VISIONKIT_MALLOC=system``, or
    when the user set glibc's own malloc variables."""
    global _applied
    if _applied is None:
        _applied = _set_thresholds()
    return _applied


def _set_thresholds() -> bool:
    choice = os.environ.get(ENV, "keep").strip().lower()
    if choice not in ("keep", "system"):
        raise ConfigError(f"environment variable {ENV}={os.environ[ENV]!r}: use 'keep' (the default) or 'system'")  # fmt: skip
    if choice == "system" or not _glibc():
        return False
    if any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        return False
    if "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))  # fmt: skip


def _glibc() -> bool:
    """Whether this process runs on glibc (asked of the C library itself: platform.libc_ver reads
    the whole Python executable, slow for a statically linked one, and finds no glibc there)."""
    try:
        return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (AttributeError, ValueError, OSError):  # not a POSIX system, or no GNU libc
        return False
