"""Label encoding: id <-> index round trips with non-contiguous ids, detector shift, targets."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from visionkit.data.labels import (
    LabelMap,
    from_detector_labels,
    multi_hot,
    to_detector_labels,
)
from visionkit.errors import ConfigError, DataError

IDS = [1, 3, 5, 7, 9, 90]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 10_000), min_size=1, max_size=30, unique=True), st.data())
def test_round_trip_non_contiguous_ids(ids: list[int], data: st.DataObject) -> None:
    lm = LabelMap([f"c{i}" for i in ids], ids)
    picks = data.draw(st.lists(st.sampled_from(ids), max_size=20))
    indices = lm.to_index(picks)
    assert all(0 <= i < len(ids) for i in indices)
    assert lm.to_ids(indices) == picks
    t = lm.to_ids(torch.as_tensor(indices, dtype=torch.int64))
    assert t.tolist() == picks
    assert lm.to_index(torch.as_tensor(picks, dtype=torch.int64)).tolist() == indices


def test_index_order_and_dict_round_trip() -> None:
    lm = LabelMap.from_categories(
        [{"id": 9, "name": "nine"}, {"id": 1, "name": "one"}, {"id": 90, "name": "ninety"}]
    )
    assert lm.ids == [1, 9, 90] and lm.names == ["one", "nine", "ninety"]
    assert lm.to_index(90) == 2 and lm.to_ids(1) == 9
    again = LabelMap.from_dict(lm.to_dict())
    assert again == lm and again.to_index(9) == 1


def test_unknown_id_and_duplicates_raise() -> None:
    lm = LabelMap(["a", "b"], [1, 3])
    with pytest.raises(DataError, match="unknown category id 2"):
        lm.to_index(2)
    with pytest.raises(ConfigError, match="duplicate"):
        LabelMap(["a", "b"], [1, 1])
    with pytest.raises(ConfigError, match="background"):
        LabelMap(["a"], [0]).with_background()


def test_background_is_index_zero() -> None:
    lm = LabelMap(["a", "b"], IDS[:2]).with_background()
    assert lm.names == ["background", "a", "b"] and lm.ids == [0, 1, 3]


def test_detector_shift_is_inverse() -> None:
    labels = torch.arange(5)
    assert to_detector_labels(labels).tolist() == [1, 2, 3, 4, 5]
    assert torch.equal(from_detector_labels(to_detector_labels(labels)), labels)


def test_multi_hot() -> None:
    mh = multi_hot([[0, 3], [], [1]], 4)
    assert mh.tolist() == [[1, 0, 0, 1], [0, 0, 0, 0], [0, 1, 0, 0]]
