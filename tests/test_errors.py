"""user_message: one line for any VisionkitError, including one raised in a DataLoader worker."""

from __future__ import annotations

import pytest

from visionkit.errors import DataError, user_message


class _Broken:
    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int):
        raise DataError(f"unreadable or truncated image /data/{index}.jpg: image file is truncated")


def test_worker_error_becomes_its_original_message() -> None:
    from torch.utils.data import DataLoader

    with pytest.raises(DataError) as err:
        next(iter(DataLoader(_Broken(), num_workers=1)))
    assert "Original Traceback" in str(err.value)  # what torch re-raises in the main process
    assert user_message(err.value) == (
        "unreadable or truncated image /data/0.jpg: image file is truncated"
    )


def test_plain_messages_stay_and_line_breaks_go() -> None:
    assert user_message(DataError("a.json: bad")) == "a.json: bad"
    assert user_message(DataError("first\n  second\n")) == "first second"
