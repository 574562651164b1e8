"""atomic_open: the target is replaced whole or not at all."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from visionkit.files import atomic_open


def test_writes_text_and_bytes_and_creates_the_folder(tmp_path: Path) -> None:
    with atomic_open(tmp_path / "a" / "results.json") as file:
        file.write('{"x": 1}\n')
    with atomic_open(tmp_path / "a" / "blob.bin", "wb") as file:
        file.write(b"\x00\x01")
    assert (tmp_path / "a" / "results.json").read_text() == '{"x": 1}\n'
    assert (tmp_path / "a" / "blob.bin").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["blob.bin", "results.json"]


def test_failure_mid_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_text("old complete content\n")
    with pytest.raises(RuntimeError, match="crash"), atomic_open(path) as file:
        file.write("new, half writ")
        file.flush()  # the bytes are on disk, in the temporary file only
        raise RuntimeError("crash")
    assert path.read_text() == "old complete content\n"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_the_target_is_untouched_until_the_block_ends(tmp_path: Path) -> None:
    path = tmp_path / "detections.json"
    path.write_text("[]")
    with atomic_open(path) as file:
        file.write("[1, 2]")
        file.flush()
        assert path.read_text() == "[]"  # a reader (or a crash now) sees the old file
        (tmp,) = [p for p in tmp_path.iterdir() if p.name != "detections.json"]
        assert tmp.parent == path.parent  # same directory: os.replace is a rename
    assert path.read_text() == "[1, 2]"


def test_permissions_follow_the_umask_like_open(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("x")
    with atomic_open(tmp_path / "atomic") as file:
        file.write("x")
    assert os.stat(tmp_path / "atomic").st_mode == os.stat(tmp_path / "plain").st_mode


def test_refuses_modes_that_do_not_write_a_whole_file(tmp_path: Path) -> None:
    for mode in ("a", "r", "w+"):
        with pytest.raises(ValueError, match="mode"), atomic_open(tmp_path / "x", mode):
            pass
