"""The ``auto`` schedule: the decision table, the BatchNorm domain distance, choice + reason saved."""

from __future__ import annotations

import pytest
import torch
from finetune_toy import ToyData, make_task, trainer
from torch import nn

from visionkit.callbacks.auto_finetune import AutoFinetune, bn_domain_distance
from visionkit.errors import ConfigError


@pytest.mark.parametrize(
    ("size", "domain", "same_labels", "expected"),
    [
        (100, "similar", False, "linear_probe"),
        (100, "different", False, "multi_stage_probe"),
        (5000, "similar", False, "partial"),
        (5000, "different", False, "full"),
        (5000, "similar", True, "evaluate"),
        (100, "different", True, "multi_stage_probe"),
    ],
)
def test_decision_table(size: int, domain: str, same_labels: bool, expected: str) -> None:
    auto = AutoFinetune(small_data=1000, domain=domain, same_labels=same_labels)
    decision = auto.decide(size, None, num_stages=4)
    assert decision["schedule"] == expected
    assert str(size) in decision["reason"] and domain in decision["reason"]
    if expected == "partial":
        assert decision["spec"]["stages"] == 2  # half of the stages by default


def test_estimated_distance_threshold_decides_similarity() -> None:
    auto = AutoFinetune(small_data=1000, max_distance=0.5)
    assert auto.decide(10, 0.1, 4)["schedule"] == "linear_probe"
    assert auto.decide(10, 2.0, 4)["schedule"] == "multi_stage_probe"


def calibrated_bn(images: torch.Tensor) -> nn.Module:
    """Conv + BN whose running statistics are exactly the statistics of ``images`` (one pass)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, momentum=None), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4, momentum=None))  # fmt: skip
    net.train()
    with torch.no_grad():
        net(images)
    return net


def test_bn_distance_is_zero_on_the_pretraining_data_and_grows_with_shift() -> None:
    images = torch.randn(16, 3, 8, 8)
    net = calibrated_bn(images)
    # the first BN saw exactly these inputs; the second saw train-mode-normalised ones, so allow
    # the small gap that eval-mode normalisation makes
    same = bn_domain_distance(net, [images])
    shifted = bn_domain_distance(net, [images * 3 + 2])
    assert same < 0.05
    assert shifted > 20 * max(same, 1e-3)
    # oracle for one BN layer: KL(N(m, v) || N(rm, rv)) per channel, averaged
    bn = nn.BatchNorm2d(3)
    bn.running_mean.fill_(1.0)
    bn.running_var.fill_(4.0)
    x = torch.randn(8, 3, 5, 5).double()
    m, v = x.mean(dim=(0, 2, 3)), x.var(dim=(0, 2, 3), unbiased=False) + bn.eps
    rv = 4.0 + bn.eps
    kl = 0.5 * (v / rv + (m - 1) ** 2 / rv - 1 - torch.log(v / rv))
    assert bn_domain_distance(bn, [x.float()]) == pytest.approx(kl.mean().item(), rel=1e-4)


def test_bn_distance_without_batchnorm_asks_to_declare() -> None:
    with pytest.raises(ConfigError, match=r"finetune\.domain"):
        bn_domain_distance(nn.Conv2d(3, 3, 1), [torch.randn(1, 3, 4, 4)])


def test_auto_runs_its_choice_and_reports_the_reason(capsys) -> None:
    auto = AutoFinetune(small_data=1000, domain="similar")
    task = make_task()
    trainer([auto], 1, limit_train_batches=1).fit(task, datamodule=ToyData())
    assert "chose 'linear_probe'" in capsys.readouterr().out
    assert not any(p.requires_grad for p in task.backbone.parameters())
    report = auto.extra_results("run")["finetune"]  # what the train command puts in results.json
    assert report["choice"] == "linear_probe"
    assert "24 training images" in report["reason"]
    assert auto.extra_results("val") == {}


def test_auto_estimates_the_domain_from_the_data() -> None:
    auto = AutoFinetune(small_data=10, domain="estimate", max_distance=1e9)
    task = make_task()
    trainer([auto], 1, limit_train_batches=1).fit(task, datamodule=ToyData())
    assert auto.report["domain_distance"] > 0  # a fresh backbone's stats are not the data's
    assert auto.report["choice"] == "partial"  # 24 >= 10 images, distance under the maximum
