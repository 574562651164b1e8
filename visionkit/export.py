"""Export a checkpoint to ONNX or TorchScript, check it against the eager model, and run it.

The exported graph is the model from preprocessed images to the task's raw outputs, with the
detectors' post-processing (NMS, boxes back to the image's size, masks pasted) inside; the file
also carries what prediction needs (task, label map, preprocessing, thresholds) as JSON: ONNX
metadata ``visionkit``, TorchScript extra file ``visionkit.json``. So ``visionkit.load(file)`` and
``predict ckpt_path=file`` give the checkpoint's results through onnxruntime / ``torch.jit.load``.
Every graph takes a batch of any size and images of any size:

* classification, semantic segmentation: input ``images`` float [N,3,H,W] (the recorded
  preprocessing), output ``logits`` [N,K] / [N,K,H,W];
* detection, instance segmentation: inputs ``images`` float [N,3,h,w] (images of any sizes, each
  normalised and resized to the detector's size, zero-padded at the bottom and right to the
  batch's largest), ``image_size`` int64 [N,2] (each image's h, w in that batch) and
  ``original_size`` int64 [N,2] (H, W: each image's size before the detector's own resize, which
  the caller does, see :class:`DetectorInput`); outputs ``boxes`` [M,4] xyxy in those pixels,
  ``labels`` [M] (0..K-1), ``scores`` [M] [, ``masks`` [M,1,H,W] probabilities at the original
  size, zero-padded to the batch's largest] and ``batch_index`` [M] (the image of each
  detection). The one-image detector is traced (its sizes stay dynamic) and a scripted loop runs
  it over the batch, each image cropped to its size (:func:`_graph`), so a detection never
  depends on the rest of the batch, as with the eager model.

The check runs both models on sample images plus a mirrored copy of the first and a copy cut to
another size (so one batch holds images of one size and of different sizes), and
writes ``export.json`` next to the file: the largest logit difference (must be <= 1e-4) or, for
detections matched one-to-one (same count; pairs of the same label with the nearest boxes, as
near-equal scores may be ordered differently), the largest box difference (<= 1e-3) and the share
of differing mask pixels (<= 1 %); a failed check is an error.
"""

from __future__ import annotations

import json
import os
import warnings
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
MASK_TOL = 0.01  # share of mask pixels (thresholded) that may differ
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
    """One detection head as a plain module: one image -> its detections, post-processing included.

    ``forward(image [3,h,w], original_size [2])``: ``image`` normalised and resized to the
    detector's size by :class:`DetectorInput` (as the detector's own transform would: exact sizes
    in float64, which a graph would round in float32), so the detector's own resize and
    normalisation are turned off; detections come back at ``original_size`` (the size the eager
    detector was given), as the detector's own post-processing gives them: boxes scaled in float32,
    RoI masks pasted into an image of ``original_size``.

    Generic over detector heads through the head contract (``visionkit.models.heads.detector_base``)
    plus the image transform at ``head.detector.transform`` with torchvision's attribute names
    (``min_size``, ``max_size``, ``image_mean``, ``image_std``, ``resize``; a ``postprocess``
    when the head hands per-box RoI masks to it, as torchvision's do).
    """

    def __init__(self, backbone: nn.Module, neck: nn.Module | None, head: nn.Module, masks: bool) -> None:  # fmt: skip
        import copy

        super().__init__()
        head = copy.deepcopy(head)  # the task's own head keeps its transform
        transform = image_transform(head)
        self.sizes = (int(transform.min_size[-1]), int(transform.max_size))
        self.mean, self.std = list(transform.image_mean), list(transform.image_std)
        # instance attributes: this copy only
        transform.resize = _keep_size
        transform.image_mean, transform.image_std = [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]
        # torchvision's transform pastes the RoI masks into the resized image: done here instead,
        # at the original size, as the eager detector does it
        self.paste = hasattr(transform, "postprocess")
        if self.paste:
            transform.postprocess = _as_given
        self.backbone, self.neck, self.head, self.masks = backbone, neck, head, masks

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = self.backbone(x)
        return self.neck(feats) if self.neck is not None else feats

    def forward(self, image: torch.Tensor, original_size: torch.Tensor) -> tuple[torch.Tensor, ...]:
        pred = self.head([image], None, self.features)[0]
        ratio = original_size.float() / torch._shape_as_tensor(image)[-2:].float()  # as torchvision
        boxes = pred["boxes"] * torch.stack([ratio[1], ratio[0], ratio[1], ratio[0]])
        out = (boxes, pred["labels"], pred["scores"])
        if not self.masks:
            return out
        masks = pred["masks"]
        if self.paste:
            masks = paste_masks(masks, boxes, original_size)
        else:  # masks at the input size: resized like the image
            masks = F.interpolate(masks, size=(original_size[0], original_size[1]), mode="bilinear", align_corners=False)  # fmt: skip
        return (*out, masks)


def image_transform(head: nn.Module) -> Any:
    """A detector head's image transform (``head.detector.transform``): what the export needs."""
    transform = getattr(getattr(head, "detector", None), "transform", None)
    missing = [a for a in ("min_size", "max_size", "image_mean", "image_std", "resize") if not hasattr(transform, a)]  # fmt: skip
    if transform is None or missing:
        raise ExportError(
            f"export: detector head {type(head).__name__} has no image transform at head.detector."
            f"transform with {', '.join(missing) or 'min_size, max_size, image_mean, image_std, resize'} "
            "(torchvision's names): the export replaces its resize"
        )
    return transform


def paste_masks(masks: torch.Tensor, boxes: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
    """RoI masks [M,1,m,m] pasted into [M,1,H,W] at their boxes, as torchvision's detectors do it
    (padded by one pixel, resized bilinearly to the integer box, cut at the image's edges), for
    all masks at once: the resize is separable, so each mask is ``Wy @ mask @ Wx^T`` with
    interpolation matrices that are zero outside its box. No per-mask loop in the graph (one
    was 0.5x eager in onnxruntime); the image size stays a graph input."""
    from torchvision.models.detection.roi_heads import expand_boxes, expand_masks

    masks, scale = expand_masks(masks, padding=1)
    boxes = expand_boxes(boxes, scale).to(dtype=torch.int64)
    m = masks.shape[-1]
    wy = _paste_weights(boxes[:, 1], boxes[:, 3], m, size[0])  # [M,H,m]
    wx = _paste_weights(boxes[:, 0], boxes[:, 2], m, size[1])  # [M,W,m]
    return torch.matmul(torch.matmul(wy, masks[:, 0]), wx.transpose(1, 2))[:, None]


def _paste_weights(start: torch.Tensor, end: torch.Tensor, m: int, length: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """[M, length, m]: the weights of ``F.interpolate(mask, size=end - start + 1, mode="bilinear",
    align_corners=False)`` along one axis, placed at pixels ``start..end`` of the image (zero
    elsewhere), computed as PyTorch's CPU kernel does (float32 scale, source index clamped at 0)."""
    extent = (end - start + 1).clamp(min=1)
    scale = torch.full_like(extent, m, dtype=torch.float32) / extent.float()
    offset = torch.arange(length, device=start.device)[None, :] - start[:, None]  # [M, length]
    inside = (offset >= 0) & (offset < extent[:, None])
    source = (scale[:, None] * (offset.float() + 0.5) - 0.5).clamp(min=0)
    low = source.floor()
    frac = (source - low).clamp(0, 1)
    low = low.long().clamp(max=m - 1)
    high = torch.where(low < m - 1, low + 1, low)
    columns = torch.arange(m, device=start.device)
    weights = (1 - frac)[..., None] * (low[..., None] == columns).float() + frac[..., None] * (high[..., None] == columns).float()  # fmt: skip
    return weights * inside[..., None].float()


def _keep_size(image: torch.Tensor, target: Any = None) -> tuple[torch.Tensor, Any]:
    return image, target


def _as_given(result: Any, image_shapes: Any, original_image_sizes: Any) -> Any:
    return result


def _crop(images: torch.Tensor, sizes: torch.Tensor, i: int) -> torch.Tensor:
    """Image ``i`` of a padded batch [N,3,H,W] without its padding (``sizes`` [N,2]: h, w)."""
    return images[i, :, : int(sizes[i, 0]), : int(sizes[i, 1])]


def _pad_masks(masks: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Masks [M,1,h,w] zero-padded to [M,1,height,width] (the batch's largest original size)."""
    return F.pad(masks, [0, width - masks.size(3), 0, height - masks.size(2)])


class DetectionsLoop(nn.Module):
    """A padded batch of images of any sizes through the traced one-image detector (scripted: the
    batch size stays dynamic in the graph), each image cropped to its ``image_size`` first, so its
    detections do not depend on the rest of the batch; detections concatenated, ``batch_index``
    names each one's image."""

    def __init__(self, one: nn.Module) -> None:
        super().__init__()
        self.one = one

    def forward(self, images: torch.Tensor, image_size: torch.Tensor, original_size: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
        boxes, labels, scores, index = [], [], [], []  # concatenated once (a sequence in ONNX)
        for i in range(images.size(0)):
            b, c, s = self.one(_crop(images, image_size, i), original_size[i])
            boxes.append(b)
            labels.append(c)
            scores.append(s)
            index.append(torch.full_like(c, i))
        return torch.cat(boxes), torch.cat(labels), torch.cat(scores), torch.cat(index)


class MaskDetectionsLoop(nn.Module):
    """:class:`DetectionsLoop` with masks, each at its image's original size, zero-padded to the
    batch's largest (height and width apart) so that they concatenate."""

    def __init__(self, one: nn.Module) -> None:
        super().__init__()
        self.one = one

    def forward(self, images: torch.Tensor, image_size: torch.Tensor, original_size: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
        height, width = int(original_size[:, 0].max()), int(original_size[:, 1].max())
        boxes, labels, scores, masks, index = [], [], [], [], []
        for i in range(images.size(0)):
            b, c, s, m = self.one(_crop(images, image_size, i), original_size[i])
            boxes.append(b)
            labels.append(c)
            scores.append(s)
            masks.append(_pad_masks(m, height, width))
            index.append(torch.full_like(c, i))
        return torch.cat(boxes), torch.cat(labels), torch.cat(scores), torch.cat(masks), torch.cat(index)  # fmt: skip


def detector_size(height: int, width: int, min_size: int, max_size: int) -> tuple[int, int]:
    """The size torchvision's detector transform resizes an image to (eval): shorter side
    ``min_size``, longer at most ``max_size``, floor(side * scale) in float64 as it computes it."""
    import math

    scale = min(min_size / min(height, width), max_size / max(height, width))
    return math.floor(height * scale), math.floor(width * scale)


def output_names(task_name: str) -> list[str]:
    if task_name == "detection":
        return ["boxes", "labels", "scores", "batch_index"]
    if task_name == "instance_segmentation":
        return ["boxes", "labels", "scores", "masks", "batch_index"]
    return ["logits"]


def input_names(task_name: str) -> list[str]:
    return ["images", "image_size", "original_size"] if is_detector(task_name) else ["images"]


def is_detector(task_name: str) -> bool:
    return task_name in ("detection", "instance_segmentation")


class DetectorInput:
    """What an exported detector's graph leaves to its caller: the detector's own image transform
    (normalise with its mean/std, then resize to its size, computed in float64 as torchvision does),
    from the ``detector_size`` entry an export records in the file's preprocessing."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        self.min_size, self.max_size = int(spec["min_size"]), int(spec["max_size"])
        self.mean = torch.tensor(spec["mean"], dtype=torch.float32)[:, None, None]
        self.std = torch.tensor(spec["std"], dtype=torch.float32)[:, None, None]

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """float [3,H,W] in 0..1 (the eager detector's input) -> float [3,h,w] (the graph's)."""
        size = detector_size(*image.shape[-2:], self.min_size, self.max_size)
        x = (image.float() - self.mean) / self.std
        return F.interpolate(x[None], size=size, mode="bilinear", align_corners=False)[0]

    def batch(self, images: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
        """Images float [3,H,W] of any sizes -> the graph's inputs: ``images`` [N,3,h,w] (each
        transformed, zero-padded at the bottom and right to the largest), ``image_size`` [N,2]
        and ``original_size`` [N,2] (int64: height, width after and before the transform)."""
        inputs = [self(im) for im in images]
        h, w = (max(x.shape[d] for x in inputs) for d in (-2, -1))
        padded = inputs[0].new_zeros(len(inputs), 3, h, w)
        for x, out in zip(inputs, padded, strict=True):
            out[:, : x.shape[-2], : x.shape[-1]] = x
        sizes = torch.tensor([list(x.shape[-2:]) for x in inputs], dtype=torch.int64)
        originals = torch.tensor([list(im.shape[-2:]) for im in images], dtype=torch.int64)
        return padded, sizes, originals


def export(task: Any, fmt: str, path: str | os.PathLike, pictures: Sequence[Any]) -> dict[str, Any]:  # fmt: skip
    """Write ``task`` as ``fmt`` to ``path``, check it on ``pictures`` (paths, arrays, tensors),
    write ``export.json`` beside it; returns that report. A failed check raises ExportError."""
    from visionkit.inference import Model
    from visionkit.layers.fuse import fuse_conv_bn

    if fmt not in FORMATS:
        raise ConfigError(f"export: unknown format '{fmt}'; choose one of {', '.join(FORMATS)} (config key format)")  # fmt: skip
    task = task.eval().cpu()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = fuse_conv_bn(task.export_module())  # a copy, BatchNorms folded into their convs
    preprocessing = dict(task.preprocess().spec)
    if isinstance(module, DetectorModel):
        preprocessing["detector_size"] = {"min_size": module.sizes[0], "max_size": module.sizes[1], "mean": module.mean, "std": module.std}  # fmt: skip
    meta = {
        "task": task.task_name,
        "label_map": task.label_map.to_dict(),
        "preprocessing": preprocessing,
        "decode_options": task.decode_options(),
        "model": task.hparams["model"],
        "inputs": input_names(task.task_name),
        "outputs": output_names(task.task_name),
    }
    eager = Model(type(task), {**meta, "preprocessing": task.preprocess().spec}, task.predict_outputs, "eager", task=task)  # fmt: skip
    image = eager.preprocess(pictures[0])
    if isinstance(module, DetectorModel):
        example: tuple[torch.Tensor, ...] = DetectorInput(preprocessing["detector_size"]).batch([image])  # fmt: skip
    else:
        example = (image[None],)
    with (
        torch.no_grad(),
        warnings.catch_warnings(),
    ):  # tracer warnings about Python values: the check decides
        warnings.simplefilter("ignore")
        graph = _graph(module, example)
        if fmt == "onnx":
            _to_onnx(graph, example, path, task.task_name, meta)
        else:
            torch.jit.save(graph, str(path), _extra_files={f"{META_NAME}.json": json.dumps(meta)})
    report = {"file": path.name, "format": fmt, "task": task.task_name, **check(eager, load_exported(path), pictures)}  # fmt: skip
    report["dynamic"] = ["batch", "height", "width"]
    (path.parent / "export.json").write_text(json.dumps(report, indent=1) + "\n")
    if not report["passed"]:
        raise ExportError(f"export check failed for {path}: {report['failure']} (details in {path.parent / 'export.json'})")  # fmt: skip
    return report


def _graph(module: nn.Module, example: tuple[torch.Tensor, ...]) -> torch.jit.ScriptModule:
    """``module`` as TorchScript: traced (sizes stay dynamic: the tracer records them as ops); a
    detector is traced on one image and scripted around it as a loop over the batch, since the
    detectors' per-image Python loops would fix the batch size of a trace."""
    if not isinstance(module, DetectorModel):
        return torch.jit.trace(module, example, check_trace=False)
    images, _, size = example
    one = torch.jit.trace(module, (images[0], size[0]), check_trace=False)
    return torch.jit.script(MaskDetectionsLoop(one) if module.masks else DetectionsLoop(one))


def _to_onnx(graph: nn.Module, example: tuple[torch.Tensor, ...], path: Path, task_name: str, meta: dict) -> None:  # fmt: skip
    try:
        import onnx
    except ImportError:
        raise ConfigError("format=onnx needs the ONNX tools: pip install 'visionkit[export]'") from None  # fmt: skip
    names = output_names(task_name)
    axes: dict[str, dict[int, str]] = {"images": {0: "batch", 2: "height", 3: "width"}}
    if is_detector(task_name):
        axes.update({"image_size": {0: "batch"}, "original_size": {0: "batch"}})
        axes.update({n: {0: "detections"} for n in names})
        if "masks" in names:
            axes["masks"] = {0: "detections", 2: "original_height", 3: "original_width"}
    else:
        axes["logits"] = {0: "batch", 2: "height", 3: "width"} if task_name == "semantic_segmentation" else {0: "batch"}  # fmt: skip
    torch.onnx.export(graph, example, str(path), dynamo=False, opset_version=OPSET, input_names=input_names(task_name), output_names=names, dynamic_axes=axes)  # fmt: skip
    model = onnx.load(str(path))
    entry = model.metadata_props.add()
    entry.key, entry.value = META_NAME, json.dumps(meta)
    onnx.save(model, str(path))


# -- running exported files --------------------------------------------------------------------------
class OnnxRunner:
    """An ONNX file through onnxruntime (CPU): ``run(*inputs)`` -> its outputs."""

    def __init__(self, path: Path, threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise ConfigError(f"{path}: running ONNX files needs onnxruntime: pip install 'visionkit[export]'") from None  # fmt: skip
        options = ort.SessionOptions()
        options.log_severity_level = 3  # its graph optimiser's notes on shared initialisers: noise
        # idle pool threads block instead of spinning: by default they spin for ~20 ms after each
        # run, taking a core from torch's decoding and pre- and post-processing between runs
        # (semantic segmentation's per-image resize + softmax), with 2 threads on 2 cores
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            options.intra_op_num_threads = int(threads)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.names = [i.name for i in self.session.get_inputs()]

    def run(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        feed = {n: x.numpy() for n, x in zip(self.names, inputs, strict=True)}
        return [torch.from_numpy(a) for a in self.session.run(None, feed)]


class TorchScriptRunner:
    """A TorchScript file (``torch.jit.load``): ``run(*inputs)`` -> its outputs."""

    def __init__(self, module: Any) -> None:
        self.module = module

    def run(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        with torch.no_grad():
            out = self.module(*inputs)
        return list(out) if isinstance(out, tuple | list) else [out]


class Runner:
    """images (list of preprocessed tensors, as the eager task gets them) -> raw outputs per
    image as a task's ``predict_outputs`` gives them: logits, or detection dicts in the input's
    pixels (``input_size`` says which). Logits: images of one shape run as one batch; detectors:
    all images in one call, whatever their sizes."""

    def __init__(self, backend: Any, meta: Mapping[str, Any]) -> None:
        self.backend, self.task_name = backend, str(meta["task"])
        spec = meta["preprocessing"].get("detector_size")
        self.detector_input = DetectorInput(spec) if is_detector(self.task_name) else None

    def __call__(self, images: list[torch.Tensor]) -> list[Any]:
        from visionkit.data.predict import by_shape

        images = [im.cpu().float() for im in images]
        outputs: list[Any] = [None] * len(images)
        if self.detector_input is None:
            for indices in by_shape(images):
                (logits,) = self.backend.run(torch.stack([images[i] for i in indices]).contiguous())
                for i, out in zip(indices, logits, strict=True):
                    outputs[i] = out
            return outputs
        names = output_names(self.task_name)[:-1]
        *found, index = self.backend.run(*self.detector_input.batch(images))  # all in one call
        for i, image in enumerate(images):
            keep, size = index == i, tuple(image.shape[-2:])
            out = {n: v[keep] for n, v in zip(names, found, strict=True)}
            if "masks" in out:  # padded to the batch's largest size
                out["masks"] = out["masks"][..., : size[0], : size[1]]
            outputs[i] = {**out, "input_size": size}
        return outputs


def read_meta(path: Path) -> tuple[dict[str, Any], Any]:
    """(the visionkit metadata, the loaded TorchScript module or None for ONNX) of an exported
    file, checked: written by visionkit export, with the inputs this version feeds."""
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
        meta, module = json.loads(props[META_NAME]), None
    else:
        extra = {f"{META_NAME}.json": ""}
        try:
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra).eval()
        except Exception as exc:  # torch.jit.load raises several types on a damaged file
            raise ConfigError(f"cannot read TorchScript file {path}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc  # fmt: skip
        if not extra[f"{META_NAME}.json"]:
            raise ConfigError(f"{path} was not written by visionkit export (no {META_NAME}.json inside)")  # fmt: skip
        meta = json.loads(extra[f"{META_NAME}.json"])
    expected = (input_names(meta.get("task", "")), output_names(meta.get("task", "")))
    if (meta.get("inputs"), meta.get("outputs")) != expected:
        raise ConfigError(
            f"{path}: a {meta.get('task')} graph with inputs {meta.get('inputs')} and outputs "
            f"{meta.get('outputs')}, but this visionkit runs inputs {expected[0]} -> outputs "
            f"{expected[1]}: export the checkpoint again"
        )
    return meta, module


def load_exported(path: str | os.PathLike, device: str = "cpu", threads: int | None = None) -> Any:
    """A :class:`visionkit.inference.Model` running an exported file."""
    from visionkit.inference import Model
    from visionkit.registries import TASKS

    path = Path(path)
    meta, module = read_meta(path)
    backend = OnnxRunner(path, threads) if module is None else TorchScriptRunner(module)
    # beside onnxruntime's own pool, torch (decoding, pre- and post-processing) runs one thread
    torch_threads = 1 if module is None else None
    return Model(TASKS.get(meta["task"]), meta, Runner(backend, meta), str(path), torch_threads=torch_threads)  # fmt: skip


# -- the check ------------------------------------------------------------------------------------------
def check(eager: Any, exported: Any, pictures: Sequence[Any]) -> dict[str, Any]:
    """Eager vs exported model on ``pictures`` plus a mirrored copy of the first and a copy of it
    cut to three quarters of its height (so images of one size and of different sizes run as one
    batch): logits (raw outputs) within 1e-4, or detections (in the
    original pixels, as predicted) paired one-to-one with boxes within 1e-3 and, with masks, the
    thresholded masks disagreeing on at most 1 % of their pixels (a box a hair across a pixel
    edge pastes its mask one pixel over; the largest probability difference is reported too)."""
    from visionkit.data.images import as_uint8_tensor

    raws = [as_uint8_tensor(p) for p in pictures]
    raws += [raws[0].flip(-1), raws[0][:, : max(1, raws[0].shape[1] * 3 // 4)]]
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
        box, score, mask, matched, differ, union = 0.0, 0.0, 0.0, 0, 0, 0
        pairs_of = zip(eager.predict(raws, batch_size=len(raws)), exported.predict(raws, batch_size=len(raws)), strict=True)  # fmt: skip
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
                    on_e, on_g = e.masks[a] >= e.mask_threshold, g.masks[b] >= g.mask_threshold
                    differ, union = differ + int((on_e ^ on_g).sum()), union + int((on_e | on_g).sum())  # fmt: skip
        report.update({"matched_detections": matched, "max_abs_box_diff": box, "max_abs_score_diff": score, "tolerance": BOX_TOL})  # fmt: skip
        if not box <= BOX_TOL:
            failures.append(f"boxes differ by {box:.3g} > {BOX_TOL}")
        if eager.task_name == "instance_segmentation":
            share = differ / max(union, 1)
            report.update({"max_abs_mask_diff": mask, "mask_pixels_differing": share, "mask_tolerance": MASK_TOL})  # fmt: skip
            if not share <= MASK_TOL:
                failures.append(f"thresholded masks differ on {share:.3g} of their pixels > {MASK_TOL}")  # fmt: skip
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
