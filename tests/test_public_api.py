"""The flat public API: every exported name resolves, and unknown names fail clearly."""

from __future__ import annotations

import pytest

import visionkit


@pytest.mark.parametrize("name", visionkit.__all__)
def test_every_export_resolves(name):
    assert getattr(visionkit, name) is not None


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        visionkit.nothing_here  # noqa: B018
