"""Analysis formulas (known answers from issue 3) and ``summarize`` against hand-computed geometry."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from torch import nn

from visionkit.analysis import (
    conv_output_size,
    format_table,
    receptive_field,
    receptive_fields,
    summarize,
    transposed_output_size,
    write_reports,
)
from visionkit.errors import ConfigError
from visionkit.plugins import load_all
from visionkit.registries import BACKBONES, LAYERS, UPSAMPLERS

load_all()


def test_known_receptive_fields() -> None:
    assert receptive_fields([(3, 1), (2, 2), (3, 3), (3, 2)]) == [3, 4, 8, 20]
    assert receptive_fields([(3, 1, 1), (3, 1, 2), (3, 1, 4)]) == [3, 7, 15]
    for n, rate in enumerate((1, 2, 4, 8, 16), start=1):
        stack = [(3, 1, 2**j) for j in range(n)]
        assert receptive_field(stack) == 2 ** (n + 1) - 1  # = 2^(log2(rate)+2) - 1
        assert rate == 2 ** (n - 1)
    assert receptive_field([]) == 1


@pytest.mark.parametrize("i,k,s,p,d", [(7, 3, 1, 0, 1), (224, 7, 2, 3, 1), (10, 3, 2, 2, 2), (5, 5, 3, 1, 1)])  # fmt: skip
def test_conv_output_size_matches_torch(i: int, k: int, s: int, p: int, d: int) -> None:
    want = (i + 2 * p - d * (k - 1) - 1) // s + 1
    assert conv_output_size(i, k, s, p, d) == want
    assert nn.Conv2d(1, 1, k, s, p, d)(torch.zeros(1, 1, i, i)).shape[-1] == want


def test_transposed_output_size_formula() -> None:
    assert transposed_output_size(7, 64, 32, 16) == 224
    assert transposed_output_size(4, 3, 2, 1, output_padding=1) == 8
    assert transposed_output_size(4, 3, 1, 0, d=2) == 8


def test_summarize_known_answer_chain() -> None:
    m = nn.Sequential(nn.Conv2d(3, 4, 3, 1, 1), nn.MaxPool2d(2, 2), nn.Conv2d(4, 4, 3, 3, 1), nn.Conv2d(4, 5, 3, 2, 1))  # fmt: skip
    rows = summarize(m, [3, 36, 36])
    assert [r.receptive_field[0] for r in rows] == [3, 4, 8, 20]
    assert [r.jump[0] for r in rows] == [1, 2, 6, 12]
    assert [r.output_shape for r in rows] == [[1, 4, 36, 36], [1, 4, 18, 18], [1, 4, 6, 6], [1, 5, 3, 3]]  # fmt: skip
    assert [r.params for r in rows] == [3 * 4 * 9 + 4, 0, 4 * 4 * 9 + 4, 4 * 5 * 9 + 5]
    assert rows[0].macs == 36 * 36 * 4 * 3 * 9 and rows[3].macs == 3 * 3 * 5 * 4 * 9
    assert m.training  # mode restored


def test_summarize_dilated_stack_and_transposed() -> None:
    m = nn.Sequential(*[LAYERS.build("conv", 2, 2, dilation=r) for r in (1, 2, 4)])
    assert [r.receptive_field[0] for r in summarize(m, [2, 32, 32])] == [3, 7, 15]
    up = nn.Sequential(nn.Conv2d(2, 2, 2, 2), UPSAMPLERS.build("transposed", 2, 2, 2))
    rows = summarize(up, [2, 8, 8])
    assert [r.jump[0] for r in rows] == [2, 1] and rows[1].output_shape[-1] == 8


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(2, 2, 1)
        self.b = nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), nn.Conv2d(2, 2, 3, padding=1))
        self.c = nn.Conv2d(4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(torch.cat([self.a(x), self.b(x)], 1)) + x


def test_branches_take_the_largest_receptive_field() -> None:
    rows = {r.name: r for r in summarize(_Residual(), [2, 8, 8])}
    assert rows["a"].receptive_field == [1, 1] and rows["b.1"].receptive_field == [5, 5]
    assert rows["c"].receptive_field == [5, 5]


def test_summarize_aspp_and_asymmetric_axes() -> None:
    rows = summarize(LAYERS.build("aspp", 2, 2, rates=[2, 3], pooling=False), [2, 16, 16])
    assert rows[-1].receptive_field == [7, 7]  # 3x3 at rate 3 is the widest branch
    rows = summarize(nn.Conv2d(1, 1, (1, 5)), [1, 8, 8])
    assert rows[0].receptive_field == [1, 5]


@pytest.mark.parametrize("name", ["vgg", "mobilenet", "simple_cnn"])
def test_summarize_builtin_backbones(name: str) -> None:
    b = BACKBONES.build({"name": name, "channels": [4, 8, 8], **({"depths": [1, 1, 1]} if name != "simple_cnn" else {})})  # fmt: skip
    rows = summarize(b, [3, 32, 32])
    assert sum(r.params for r in rows) == sum(p.numel() for p in b.parameters())
    assert rows[-1].jump[0] == b.feature_info[-1].reduction
    assert rows[-1].receptive_field[0] > rows[0].receptive_field[0] >= 3


def test_summarize_timm_backbone() -> None:
    pytest.importorskip("timm")
    b = BACKBONES.build({"name": "timm", "model_name": "test_resnet"})
    rows = summarize(b, [3, 32, 32])
    assert sum(r.params for r in rows) == sum(p.numel() for p in b.parameters())
    assert max(r.jump[0] for r in rows) == b.feature_info[-1].reduction


def test_reports_and_bad_input(tmp_path) -> None:
    rows = summarize(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()), [1, 8, 8])
    table = format_table(rows)
    assert "Conv2d" in table and "total" in table.splitlines()[-1]
    j, c = write_reports(rows, tmp_path, {"input_size": [1, 8, 8]})
    data = json.loads(j.read_text())
    assert data["total_params"] == 20 and len(data["layers"]) == 2 and data["input_size"] == [1, 8, 8]  # fmt: skip
    assert len(list(csv.reader(c.open()))) == 3
    with pytest.raises(ConfigError, match="input_size"):
        summarize(nn.Identity(), [8, 8])
