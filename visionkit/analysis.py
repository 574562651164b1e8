"""Model analysis: output-size and receptive-field formulas, and ``summarize`` (a per-layer table).

``summarize`` runs one real forward pass. A ``TorchFunctionMode`` carries each tensor's geometry
(jump = stride from the input, receptive field; per axis H, W) through every torch operation:
convolutions, pools, transposed convs and resizes apply their formula; any other operation (sum,
concatenation, activation) takes the largest receptive field of its inputs, so residual, ASPP and
concatenation branches report the largest one. Forward hooks on leaf modules record one row each.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from visionkit.errors import ConfigError


# -- formulas ---------------------------------------------------------------------------------
def conv_output_size(i: int, k: int, s: int = 1, p: int = 0, d: int = 1) -> int:
    """Convolution/pooling output length: floor((i + 2p - d*(k-1) - 1) / s) + 1."""
    return (i + 2 * p - d * (k - 1) - 1) // s + 1


def transposed_output_size(i: int, k: int, s: int = 1, p: int = 0, output_padding: int = 0, d: int = 1) -> int:  # fmt: skip
    """Transposed-convolution output length: (i-1)*s - 2p + d*(k-1) + output_padding + 1."""
    return (i - 1) * s - 2 * p + d * (k - 1) + output_padding + 1


def receptive_fields(layers: Iterable[Sequence[int]]) -> list[int]:
    """Receptive field after each layer given as (k, s) or (k, s, d):
    r_n = r_{n-1} + (k_n - 1) * d_n * prod_{i<n} s_i, with r_0 = 1.
    """
    rf, jump, out = 1, 1, []
    for layer in layers:
        k, s, d = (*layer, 1, 1)[:3]
        rf += (k - 1) * d * jump
        jump *= s
        out.append(rf)
    return out


def receptive_field(layers: Iterable[Sequence[int]]) -> int:
    """Receptive field of a stack of (k, s[, d]) layers (see ``receptive_fields``)."""
    rfs = receptive_fields(layers)
    return rfs[-1] if rfs else 1


# -- geometry tracking ----------------------------------------------------------------------
@dataclass(frozen=True)
class Geometry:
    """Per-axis (H, W) stride from the input (``jump``) and receptive field of one tensor."""

    jump: tuple[float, float] = (1.0, 1.0)
    rf: tuple[float, float] = (1.0, 1.0)

    def merge(self, other: Geometry) -> Geometry:
        return Geometry(
            tuple(max(a, b) for a, b in zip(self.jump, other.jump, strict=True)),  # type: ignore[arg-type]
            tuple(max(a, b) for a, b in zip(self.rf, other.rf, strict=True)),  # type: ignore[arg-type]
        )

    def kernel(self, k: Sequence[int], s: Sequence[float], d: Sequence[int] = (1, 1)) -> Geometry:
        rf = tuple(r + (kk - 1) * dd * j for r, kk, dd, j in zip(self.rf, k, d, self.jump, strict=True))  # fmt: skip
        return Geometry(tuple(j * ss for j, ss in zip(self.jump, s, strict=True)), rf)  # type: ignore[arg-type]


_ATTR = "_visionkit_geometry"


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, (list, tuple)):
        return (int(v[0]), int(v[-1]))
    return (int(v), int(v))


def _arg(args: tuple, kwargs: dict, i: int, name: str, default: Any) -> Any:
    if name in kwargs:
        return kwargs[name]
    return args[i] if len(args) > i else default


def _tensors(obj: Any) -> Iterable[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _tensors(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _tensors(o)


def _hw(t: Any) -> tuple[int, int] | None:
    return (t.shape[-2], t.shape[-1]) if isinstance(t, torch.Tensor) and t.dim() >= 3 else None


_CONV = {torch.conv2d, F.conv2d}
_TCONV = {torch.conv_transpose2d, F.conv_transpose2d}
_POOL = {F.avg_pool2d, torch._C._nn.avg_pool2d, F.max_pool2d_with_indices, getattr(F, "_max_pool2d", None), torch.max_pool2d}  # fmt: skip
_NO_SCALE = {F.pad, torch._C._nn.pad}


def _propagate(func: Any, args: tuple, kwargs: dict, out: Any) -> Geometry | None:
    infos = [getattr(t, _ATTR) for t in _tensors((args, kwargs)) if hasattr(t, _ATTR)]
    if not infos:
        return None
    first = args[0] if args and isinstance(args[0], torch.Tensor) else None
    g_in = getattr(first, _ATTR, None) if first is not None else None
    merged = infos[0]
    for g in infos[1:]:
        merged = merged.merge(g)
    out_t = next(iter(_tensors(out)), None)
    if g_in is None or _hw(first) is None or _hw(out_t) is None:
        return merged
    if func in _CONV and args[1].dim() == 4:
        k = tuple(args[1].shape[-2:])
        return g_in.kernel(k, _pair(_arg(args, kwargs, 3, "stride", 1)), _pair(_arg(args, kwargs, 5, "dilation", 1)))  # fmt: skip
    if func in _POOL:
        k = _pair(_arg(args, kwargs, 1, "kernel_size", 1))
        stride = _arg(args, kwargs, 2, "stride", None)
        d = _pair(_arg(args, kwargs, 4, "dilation", 1)) if func is not F.avg_pool2d else (1, 1)
        return g_in.kernel(k, _pair(stride) if stride not in (None, [], ()) else k, d)
    if func in _TCONV and args[1].dim() == 4:
        k = tuple(args[1].shape[-2:])
        s = _pair(_arg(args, kwargs, 3, "stride", 1))
        d = _pair(_arg(args, kwargs, 7, "dilation", 1))
        touched = [math.ceil((dd * (kk - 1) + 1) / ss) for kk, ss, dd in zip(k, s, d, strict=True)]
        return g_in.kernel(touched, [1 / ss for ss in s])
    hw_in, hw_out = _hw(first), _hw(out_t)
    if func in _NO_SCALE or hw_in == hw_out:
        return merged
    # resizes (interpolate, adaptive pools, pixel shuffle, strided slicing): jump scales with the
    # size ratio when it is an integer factor; shrinking ops see ceil(i/o) inputs per output.
    scale, widen = [], []
    for i, o in zip(hw_in, hw_out, strict=True):
        if i == o or max(i, o) % min(i, o):
            scale.append(1.0)
            widen.append(1)
        else:
            scale.append(i / o)
            widen.append(math.ceil(i / o) if i > o else 1)
    return Geometry(merged.jump, merged.rf).kernel(widen, scale)


class _GeometryMode(TorchFunctionMode):
    """Attaches a ``Geometry`` to every tensor produced while active."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        geometry = _propagate(func, args, kwargs, out)
        if geometry is not None:
            for t in _tensors(out):
                setattr(t, _ATTR, geometry)
        return out


# -- summary ----------------------------------------------------------------------------------
@dataclass
class LayerRow:
    """One leaf-module call: what it is, its output, and its place in the input's geometry."""

    name: str
    type: str
    output_shape: list[int]
    jump: list[float]
    receptive_field: list[float]
    params: int
    macs: int


def _macs(module: nn.Module, inputs: tuple, out: torch.Tensor) -> int:
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        x = inputs[0]
        return x.numel() * module.out_channels // module.groups * math.prod(module.kernel_size)
    if isinstance(module, nn.modules.conv._ConvNd):
        return out.numel() * module.in_channels // module.groups * math.prod(module.kernel_size)
    if isinstance(module, nn.Linear):
        return out.numel() * module.in_features
    return 0


def _num(v: float) -> float | int:
    return int(v) if float(v).is_integer() else round(float(v), 4)


def summarize(model: nn.Module, input_size: Sequence[int]) -> list[LayerRow]:
    """One row per leaf-module call of a forward pass on a random (1, C, H, W) input, in eval mode
    without gradients (the model's mode is restored afterwards).
    """
    size = [int(v) for v in input_size]
    if len(size) != 3 or min(size) < 1:
        raise ConfigError(f"input_size must be [C, H, W] with positive values, got {list(input_size)}")  # fmt: skip
    names = {m: n for n, m in model.named_modules()}
    rows: list[LayerRow] = []

    def hook(module: nn.Module, inputs: tuple, output: Any) -> None:
        out = next(iter(_tensors(output)), None)
        if out is None:
            return
        g = getattr(out, _ATTR, None) or Geometry()
        rows.append(
            LayerRow(
                name=names.get(module, "?"),
                type=type(module).__name__,
                output_shape=list(out.shape),
                jump=[_num(v) for v in g.jump],
                receptive_field=[_num(v) for v in g.rf],
                params=sum(p.numel() for p in module.parameters(recurse=False)),
                macs=int(_macs(module, inputs, out)),
            )
        )

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    was_training = model.training
    try:
        model.eval()
        p = next(iter(model.parameters()), None)
        x = torch.randn(1, *size, device=p.device if p is not None else None)
        setattr(x, _ATTR, Geometry())
        with torch.no_grad(), _GeometryMode():
            model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return rows


# -- output -----------------------------------------------------------------------------------
def _fmt_pair(v: Sequence[float]) -> str:
    return str(v[0]) if v[0] == v[1] else f"{v[0]}x{v[1]}"


def format_table(rows: Sequence[LayerRow]) -> str:
    """A plain-text table of ``rows`` with totals (params, MACs)."""
    header = ["name", "type", "output", "jump", "rf", "params", "MACs"]
    body = [
        [r.name, r.type, "x".join(map(str, r.output_shape[1:])), _fmt_pair(r.jump),
         _fmt_pair(r.receptive_field), f"{r.params:,}", f"{r.macs:,}"]
        for r in rows
    ]  # fmt: skip
    body.append(["total", "", "", "", "", f"{sum(r.params for r in rows):,}", f"{sum(r.macs for r in rows):,}"])  # fmt: skip
    widths = [max(len(str(c)) for c in col) for col in zip(header, *body, strict=True)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in [header, *body]]  # fmt: skip
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_reports(rows: Sequence[LayerRow], out_dir: str | Path, meta: dict[str, Any] | None = None) -> tuple[Path, Path]:  # fmt: skip
    """Write ``analysis.json`` (meta, totals, rows) and ``analysis.csv`` (rows) into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = {
        **(meta or {}),
        "total_params": sum(r.params for r in rows),
        "total_macs": sum(r.macs for r in rows),
        "layers": [asdict(r) for r in rows],
    }
    json_path, csv_path = out / "analysis.json", out / "analysis.csv"
    json_path.write_text(json.dumps(data, indent=2))
    with csv_path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["name", "type", "output_shape", "jump_h", "jump_w", "rf_h", "rf_w", "params", "macs"])  # fmt: skip
        for r in rows:
            writer.writerow([r.name, r.type, "x".join(map(str, r.output_shape)), *r.jump, *r.receptive_field, r.params, r.macs])  # fmt: skip
    return json_path, csv_path
