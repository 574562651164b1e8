"""The objective ``train`` returns: the monitored metric by default, another logged key by name,
a clear error for a key that is not logged, and NaN as a failed run."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from visionkit.errors import ConfigError
from visionkit.sweep.objective import (
    ObjectiveError,
    objective_direction,
    objective_key,
    objective_value,
)

RESULTS = {"val/acc": 0.75, "val/f1": 0.5, "val/loss": 0.9, "test/acc": 0.7, "best_epoch": 2}


def cfg(**top: object) -> OmegaConf:
    base = {"objective": None, "objective_mode": None,
            "task": {"name": "classification", "monitor": "val/acc", "monitor_mode": "max"}}  # fmt: skip
    return OmegaConf.create({**base, **top})


def test_default_objective_is_the_monitored_metric() -> None:
    assert objective_key(cfg()) == "val/acc"
    assert objective_value(cfg(), RESULTS) == 0.75
    assert objective_direction(cfg()) == "maximize"


def test_objective_by_key_and_its_direction() -> None:
    assert objective_value(cfg(objective="val/f1"), RESULTS) == 0.5
    assert objective_direction(cfg(objective="val/f1")) == "maximize"
    assert objective_direction(cfg(objective="val/loss")) == "minimize"
    assert objective_direction(cfg(objective="val/loss", objective_mode="max")) == "maximize"
    with pytest.raises(ConfigError, match="objective_mode must be"):
        objective_direction(cfg(objective_mode="up"))


def test_a_key_that_is_not_logged_names_the_logged_ones() -> None:
    with pytest.raises(ConfigError, match=r"objective 'val/f2' is not a logged metric; logged: test/acc, val/acc, val/f1, val/loss"):  # fmt: skip
        objective_value(cfg(objective="val/f2"), RESULTS)


@pytest.mark.parametrize("value", [None, float("nan"), float("inf")])
def test_nan_objective_is_a_failed_run(value: object) -> None:
    with pytest.raises(ObjectiveError, match="objective 'val/acc' is"):
        objective_value(cfg(), {**RESULTS, "val/acc": value})


def test_a_single_run_without_the_objective_returns_nan() -> None:
    """Outside a sweep (e.g. `finetune=evaluate`, which never validates) nothing fails."""
    import math

    assert math.isnan(objective_value(cfg(), {"test/acc": 0.7}, strict=False))
    assert math.isnan(objective_value(cfg(), {"val/acc": None}, strict=False))
    assert objective_value(cfg(), RESULTS, strict=False) == 0.75
