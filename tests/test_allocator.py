"""visionkit.allocator: freed batches' memory is reused without page faults; the user's choice wins."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from visionkit import allocator
from visionkit.errors import ConfigError

glibc = pytest.mark.skipif(not allocator._glibc(), reason="glibc's mallopt")

# a model's activations: four 8 MiB blocks alive at once (glibc's malloc, as torch's CPU allocator
# calls it), written, then freed; 40 batches: the page faults of the last 30
FAULTS = """
import ctypes, json, resource
from visionkit.allocator import keep_freed_memory
applied = keep_freed_memory()
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes, libc.memset.argtypes = [ctypes.c_void_p], [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
def batch():
    blocks = [libc.malloc(8 << 20) for _ in range(4)]
    for block in blocks:
        libc.memset(block, 1, 8 << 20)
    for block in blocks:
        libc.free(block)
for _ in range(10):
    batch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(30):
    batch()
print(json.dumps({"applied": applied, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def faults(**env: str) -> dict:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "VISIONKIT_MALLOC"))}  # fmt: skip
    out = subprocess.run([sys.executable, "-c", FAULTS], env={**environ, **env}, capture_output=True, text=True, timeout=300, check=True)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


@glibc
def test_freed_blocks_are_reused_without_page_faults() -> None:
    kept, system = faults(), faults(VISIONKIT_MALLOC="system")
    assert kept["applied"] and not system["applied"]
    # glibc returns the freed blocks (more than its trim threshold at the heap's top): each batch
    # faults in 4 x 2,048 fresh 4 KiB pages again
    assert system["faults"] > 30 * 4000
    assert kept["faults"] < 30 * 50


@glibc
def test_glibc_own_settings_take_precedence() -> None:
    assert not faults(MALLOC_TRIM_THRESHOLD_="131072")["applied"]


def test_an_unknown_choice_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(allocator.ENV, "jemalloc")
    with pytest.raises(ConfigError, match=r"VISIONKIT_MALLOC='jemalloc'.*'keep'.*'system'"):
        allocator._set_thresholds()


def test_the_cli_reports_an_unknown_choice_as_an_error_line() -> None:
    env = {**os.environ, allocator.ENV: "jemalloc"}
    out = subprocess.run([sys.executable, "-m", "visionkit", "list"], env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith("error: environment variable VISIONKIT_MALLOC='jemalloc'")  # fmt: skip
