"""Progress display of commands outside training: drawn only inside ``shown()`` on a terminal."""

from __future__ import annotations

import pytest

from visionkit import progress


def drawn(capsys: pytest.CaptureFixture, shown: bool, terminal: bool, monkeypatch) -> tuple[list, str]:  # fmt: skip
    monkeypatch.setattr(progress, "is_terminal", lambda: terminal)
    with progress.shown(shown):
        items = list(progress.track(range(3), "reading jobs"))
        with progress.status("drawing report.png"):
            pass
    return items, capsys.readouterr().err


def test_a_bar_is_drawn_on_a_terminal(capsys, monkeypatch) -> None:
    items, err = drawn(capsys, True, True, monkeypatch)
    assert items == [0, 1, 2]
    assert ("reading jobs" in err and "3/3" in err) or "100%" in err


@pytest.mark.parametrize(("shown", "terminal"), [(True, False), (False, True)])
def test_nothing_is_drawn_when_not_a_terminal_or_quiet(capsys, monkeypatch, shown: bool, terminal: bool) -> None:  # fmt: skip
    items, err = drawn(capsys, shown, terminal, monkeypatch)
    assert items == [0, 1, 2] and err == ""


def test_library_loops_are_untouched_outside_a_command() -> None:
    items = [1, 2]
    assert progress.track(items, "checking images") is items
