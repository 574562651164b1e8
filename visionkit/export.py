"""Export a checkpoint to ONNX or TorchScript, check it against the eager model, and run it.

The exported graph is the model from preprocessed images to the task's raw outputs, with the
detectors' post-processing (resize back, NMS, mask pasting) inside; the file also carries what
prediction needs (task, label map, preprocessing, thresholds) as JSON: ONNX metadata
``visionkit``, TorchScript extra file ``visionkit.json``. So ``visionkit.load(file)`` and
``predict ckpt_path=file`` give the checkpoint's results through onnxruntime / ``torch.jit.load``.

* classification, semantic segmentation: input ``images`` float [N,3,H,W] (batch, height and width
  dynamic), output ``logits`` [N,K] / [N,K,H,W];
* detection, instance segmentation: input ``image`` float [3,H,W] in 0..1 (height and width
  dynamic; torchvision's detectors take one image per call in a traced graph, so a batch is a loop
  of calls), outputs ``boxes`` [M,4] xyxy in input pixels, ``labels`` [M] (0..K-1), ``scores`` [M]
  [, ``masks`` [M,1,H,W] probabilities].

The check runs both models on sample images and writes ``export.json`` next to the file: the
largest logit difference (must be <= 1e-4) or, for detections matched one-to-one (same count;
pairs of the same label with the nearest boxes, as near-equal scores may be ordered differently),
the largest box difference (<= 1e-3); a failed check is an error.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from visionkit.errors import ConfigError, ExportError

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
LOGIT_TOL = 1e-4
BOX_TOL = 1e-3
META_NAME = "visionkit"  # ONNX metadata key; TorchScript extra file META_NAME + ".json"
OPSET = 17


class LogitsModel(nn.Module):
    """backbone -> [neck] -> head as a plain module (no LightningModule): images -> logits;
    ``dense`` resizes them to the input (semantic segmentation)."""

    def __init__(self, backbone: nn.Module, neck: nn.Module | None, head: nn.Module, dense: bool) -> None:  # fmt: skip
        super().__init__()
        self.backbone, self.neck, self.head, self.dense = backbone, neck, head, dense

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        feats = self.backbone(images)
        logits = self.head(self.neck(feats) if self.neck is not None else feats)
        if self.dense:
            logits = F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)  # fmt: skip
        return logits


class DetectorModel(nn.Module):
    """A detection task as a plain module: one image [3,H,W] -> boxes, labels, scores[, masks].

    The image comes already resized to the detector's size (``detector_size``, done by the
    preprocessing as torchvision does it: exact sizes in float64, which an exported graph would
    round in float32), so the detector's own resize is skipped and outputs are in input pixels.
    """

    def __init__(self, backbone: nn.Module, neck: nn.Module | None, head: nn.Module, masks: bool) -> None:  # fmt: skip
        import copy

        super().__init__()
        head = copy.deepcopy(head)  # the task's own head keeps resizing
        transform = head.detector.transform
        self.sizes = (int(transform.min_size[-1]), int(transform.max_size))
        self.mean, self.std = list(transform.image_mean), list(transform.image_std)
        # normalised and resized by the preprocessing, in the eager detector's order
        transform.resize = _keep_size  # instance attributes: this copy only
        transform.image_mean, transform.image_std = [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]
        self.backbone, self.neck, self.head, self.masks = backbone, neck, head, masks

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = self.backbone(x)
        return self.neck(feats) if self.neck is not None else feats

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        pred = self.head([image], None, self.features)[0]
        out = (pred["boxes"], pred["labels"], pred["scores"])
        return (*out, pred["masks"]) if self.masks else out


def _keep_size(image: torch.Tensor, target: Any = None) -> tuple[torch.Tensor, Any]:
    return image, target


def detector_size(height: int, width: int, min_size: int, max_size: int) -> tuple[int, int]:
    """The size torchvision's detector transform resizes an image to (eval): shorter side
    ``min_size``, longer at most ``max_size``, floor(side * scale) in float64 as it computes it."""
    import math

    scale = min(min_size / min(height, width), max_size / max(height, width))
    return math.floor(height * scale), math.floor(width * scale)


def output_names(task_name: str) -> list[str]:
    if task_name == "detection":
        return ["boxes", "labels", "scores"]
    if task_name == "instance_segmentation":
        return ["boxes", "labels", "scores", "masks"]
    return ["logits"]


def is_detector(task_name: str) -> bool:
    return task_name in ("detection", "instance_segmentation")


def export(task: Any, fmt: str, path: str | os.PathLike, pictures: Sequence[Any]) -> dict[str, Any]:  # fmt: skip
    """Write ``task`` as ``fmt`` to ``path``, check it on ``pictures`` (paths, arrays, tensors:
    each model preprocesses them its way), write ``export.json`` beside it; returns that report.
    A failed check raises ExportError."""
    from visionkit.inference import Model

    if fmt not in FORMATS:
        raise ConfigError(f"export: unknown format '{fmt}'; choose one of {', '.join(FORMATS)} (config key format)")  # fmt: skip
    task = task.eval().cpu()
    if fmt == "torchscript" and is_detector(task.task_name):
        raise ConfigError(
            f"export: format=torchscript is not available for {task.task_name}: torch.jit.trace "
            "records torchvision's detector post-processing with the example image's size as a "
            "constant; use format=onnx (dynamic image size)"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = task.export_module().eval()
    preprocessing = dict(task.preprocess().spec)
    if isinstance(module, DetectorModel):
        preprocessing["detector_size"] = {"min_size": module.sizes[0], "max_size": module.sizes[1], "mean": module.mean, "std": module.std}  # fmt: skip
    meta = {
        "task": task.task_name,
        "label_map": task.label_map.to_dict(),
        "preprocessing": preprocessing,
        "decode_options": task.decode_options(),
        "model": task.hparams["model"],
        "outputs": output_names(task.task_name),
    }
    eager = Model(type(task), {**meta, "preprocessing": task.preprocess().spec}, task.predict_outputs, "eager", task=task)  # fmt: skip
    from visionkit.data.transforms import Preprocess

    example = Preprocess(preprocessing)(pictures[0])
    example = example if is_detector(task.task_name) else example[None]
    with torch.no_grad():
        if fmt == "onnx":
            _to_onnx(module, example, path, task.task_name, meta)
        else:
            _to_torchscript(module, example, path, meta)
    report = {"file": path.name, "format": fmt, "task": task.task_name, **check(eager, load_exported(path), pictures)}  # fmt: skip
    report["dynamic"] = ["height", "width"] if is_detector(task.task_name) else ["batch", "height", "width"]  # fmt: skip
    (path.parent / "export.json").write_text(json.dumps(report, indent=1) + "\n")
    if not report["passed"]:
        raise ExportError(f"export check failed for {path}: {report['failure']} (details in {path.parent / 'export.json'})")  # fmt: skip
    return report


def _to_onnx(module: nn.Module, example: torch.Tensor, path: Path, task_name: str, meta: dict) -> None:  # fmt: skip
    try:
        import onnx
    except ImportError:
        raise ConfigError("format=onnx needs the ONNX tools: pip install 'visionkit[export]'") from None  # fmt: skip
    import warnings

    names = output_names(task_name)
    if is_detector(task_name):
        inputs, axes = ["image"], {"image": {1: "height", 2: "width"}}
        axes.update({n: {0: "detections"} for n in names})
    else:
        inputs, axes = ["images"], {"images": {0: "batch", 2: "height", 3: "width"}}
        axes["logits"] = {0: "batch", 2: "height", 3: "width"} if task_name == "semantic_segmentation" else {0: "batch"}  # fmt: skip
    with warnings.catch_warnings():  # tracer warnings about Python values: the check decides
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), str(path), dynamo=False, opset_version=OPSET, input_names=inputs, output_names=names, dynamic_axes=axes)  # fmt: skip
    model = onnx.load(str(path))
    entry = model.metadata_props.add()
    entry.key, entry.value = META_NAME, json.dumps(meta)
    onnx.save(model, str(path))


def _to_torchscript(module: nn.Module, example: torch.Tensor, path: Path, meta: dict) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, (example,), check_trace=False)
    torch.jit.save(traced, str(path), _extra_files={f"{META_NAME}.json": json.dumps(meta)})


# -- running exported files --------------------------------------------------------------------------
class OnnxRunner:
    """Raw outputs per image from an ONNX file through onnxruntime (CPU)."""

    def __init__(self, path: Path, task_name: str, threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise ConfigError(f"{path}: running ONNX files needs onnxruntime: pip install 'visionkit[export]'") from None  # fmt: skip
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.task_name = task_name

    def run(self, x: torch.Tensor) -> list[torch.Tensor]:
        name = self.session.get_inputs()[0].name
        return [torch.from_numpy(a) for a in self.session.run(None, {name: x.numpy()})]


class TorchScriptRunner:
    """Raw outputs per image from a TorchScript file (``torch.jit.load``)."""

    def __init__(self, module: Any, task_name: str) -> None:
        self.module, self.task_name = module, task_name

    def run(self, x: torch.Tensor) -> list[torch.Tensor]:
        with torch.no_grad():
            out = self.module(x)
        return list(out) if isinstance(out, tuple | list) else [out]


class Runner:
    """images (list of preprocessed tensors) -> raw outputs per image, as a task's
    ``predict_outputs`` gives them (logits per image, or detection dicts)."""

    def __init__(self, backend: Any, task_name: str) -> None:
        self.backend, self.task_name = backend, task_name

    def __call__(self, images: list[torch.Tensor]) -> list[Any]:
        names = output_names(self.task_name)
        if is_detector(self.task_name):
            return [dict(zip(names, self.backend.run(im.cpu().float().contiguous()), strict=True)) for im in images]  # fmt: skip
        from visionkit.data.predict import by_shape

        outputs: list[Any] = [None] * len(images)
        for indices in by_shape(images):
            (logits,) = self.backend.run(torch.stack([images[i] for i in indices]).cpu().float().contiguous())  # fmt: skip
            for i, out in zip(indices, logits, strict=True):
                outputs[i] = out
        return outputs


def read_meta(path: Path) -> tuple[dict[str, Any], Any]:
    """(the visionkit metadata, the loaded backend object) of an exported file."""
    if path.suffix == ".onnx":
        try:
            import onnx
        except ImportError:
            raise ConfigError(f"{path}: reading ONNX files needs: pip install 'visionkit[export]'") from None  # fmt: skip
        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # onnx raises several types on a damaged file: reported, chained
            raise ConfigError(f"cannot read ONNX file {path}: {type(exc).__name__}: {exc}") from exc
        props = {p.key: p.value for p in model.metadata_props}
        if META_NAME not in props:
            raise ConfigError(f"{path} was not written by visionkit export (no '{META_NAME}' metadata)")  # fmt: skip
        return json.loads(props[META_NAME]), None
    extra = {f"{META_NAME}.json": ""}
    try:
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except Exception as exc:  # torch.jit.load raises several types on a damaged file
        raise ConfigError(f"cannot read TorchScript file {path}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc  # fmt: skip
    if not extra[f"{META_NAME}.json"]:
        raise ConfigError(f"{path} was not written by visionkit export (no {META_NAME}.json inside)")  # fmt: skip
    return json.loads(extra[f"{META_NAME}.json"]), module.eval()


def load_exported(path: str | os.PathLike, device: str = "cpu", threads: int | None = None) -> Any:
    """A :class:`visionkit.inference.Model` running an exported file."""
    from visionkit.inference import Model
    from visionkit.registries import TASKS

    path = Path(path)
    meta, module = read_meta(path)
    task_name = meta["task"]
    backend = OnnxRunner(path, task_name, threads) if module is None else TorchScriptRunner(module, task_name)  # fmt: skip
    return Model(TASKS.get(task_name), meta, Runner(backend, task_name), str(path))


# -- the check ------------------------------------------------------------------------------------------
def check(eager: Any, exported: Any, pictures: Sequence[Any]) -> dict[str, Any]:
    """Eager vs exported model on ``pictures``: logits (raw outputs) within 1e-4, or detections
    (in the original pixels, as predicted) paired one-to-one with boxes within 1e-3."""
    from visionkit.data.images import as_uint8_tensor

    raws = [as_uint8_tensor(p) for p in pictures]
    report: dict[str, Any] = {"images": len(raws), "sizes": [list(r.shape[-2:]) for r in raws]}
    failures = []
    if not is_detector(eager.task_name):
        with torch.no_grad():
            a = eager.runner([eager.preprocess.to_input(r) for r in raws])
        b = exported.runner([exported.preprocess.to_input(r) for r in raws])
        diff = max(float((torch.as_tensor(x) - torch.as_tensor(y)).abs().max()) for x, y in zip(a, b, strict=True))  # fmt: skip
        report.update({"max_abs_logit_diff": diff, "tolerance": LOGIT_TOL})
        if not diff <= LOGIT_TOL:
            failures.append(f"logits differ by {diff:.3g} > {LOGIT_TOL}")
    else:
        box, score, mask, matched = 0.0, 0.0, 0.0, 0
        pairs_of = zip(eager.predict(raws), exported.predict(raws), strict=True)
        for i, (e, g) in enumerate(pairs_of):
            e_, g_ = ({"boxes": d.boxes, "labels": d.indices, "scores": d.scores} for d in (e, g))
            pairs = match(e_, g_)
            if isinstance(pairs, str):
                failures.append(f"image {i}: {pairs}")
                continue
            a, b = pairs
            matched += len(a)
            if len(a):
                box = max(box, float((e.boxes[a] - g.boxes[b]).abs().max()))
                score = max(score, float((e.scores[a] - g.scores[b]).abs().max()))
                if e.masks is not None:
                    mask = max(mask, float((e.masks[a] - g.masks[b]).abs().max()))
        report.update({"matched_detections": matched, "max_abs_box_diff": box, "max_abs_score_diff": score, "tolerance": BOX_TOL})  # fmt: skip
        if eager.task_name == "instance_segmentation":
            report["max_abs_mask_diff"] = mask  # masks pasted at the resized size, then resized
        if not box <= BOX_TOL:
            failures.append(f"boxes differ by {box:.3g} > {BOX_TOL}")
    report["passed"] = not failures
    if failures:
        report["failure"] = "; ".join(failures)
    return report


def match(eager: Mapping[str, torch.Tensor], got: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor] | str:  # fmt: skip
    """Eager and exported detections of one image paired one-to-one (same label, nearest boxes:
    near-equal scores may come in another order); a message when they cannot be."""
    from scipy.optimize import linear_sum_assignment

    n, m = len(eager["scores"]), len(got["scores"])
    if n != m:
        return f"{n} eager detections but {m} exported"
    if n == 0:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    cost = (eager["boxes"][:, None, :] - got["boxes"][None, :, :].float()).abs().amax(dim=2)
    same = eager["labels"].long()[:, None] == torch.as_tensor(got["labels"]).long()[None, :]
    cost = torch.where(same, cost, torch.full_like(cost, 1e9)).double().numpy()
    rows, cols = linear_sum_assignment(cost)
    if (cost[rows, cols] >= 1e9).any():
        return "labels differ"
    return torch.as_tensor(rows), torch.as_tensor(cols)
