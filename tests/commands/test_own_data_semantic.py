"""Own data for semantic segmentation: COCO (instance masks painted), image + mask folders.

The tests are tests/commands/own_data.py's, run here on this task's pairs only.
"""

import pytest

from tests.commands.own_data import (  # noqa: F401 (the tests and the module's chains fixture)
    chains,
    parametrize_pairs,
    test_browse,
    test_predict,
    test_test,
    test_train,
)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    parametrize_pairs(metafunc, ("semantic_segmentation",))
