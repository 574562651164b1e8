"""Own data for instance segmentation: COCO (polygons, RLE crowds), Pascal VOC, YOLO polygons.

The tests are tests/commands/own_data.py's, run here on this task's pairs only.
"""

import pytest

from tests.commands.own_data import (  # noqa: F401 (the tests and the module's chains fixture)
    chains,
    parametrize_pairs,
    test_browse,
    test_coco_map_equals_pycocotools_on_detections_json,
    test_predict,
    test_test,
    test_train,
)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    parametrize_pairs(metafunc, ("instance_segmentation",))
