"""Own data for classification: COCO (each image's largest object), class folders, digits.

The tests are tests/commands/own_data.py's, run here on this task's pairs only.
"""

import pytest

from tests.commands.own_data import (  # noqa: F401 (the tests and the module's chains fixture)
    chains,
    parametrize_pairs,
    test_browse,
    test_predict,
    test_readme_own_data_section_covers_every_format,
    test_test,
    test_train,
    test_unknown_data_key_is_one_error_line,
)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    parametrize_pairs(metafunc, ("classification",))
