"""The Python API: ``model = visionkit.load(path)``; ``model.predict(images)`` -> typed results.

``path`` is a visionkit checkpoint (``.ckpt``) or a file written by ``visionkit export`` (``.onnx``
run by onnxruntime, ``.pt`` TorchScript run by ``torch.jit.load``). Everything prediction needs
(task, label map, preprocessing) comes from the file itself, never from a data config::

    import visionkit
    model = visionkit.load("outputs/.../checkpoints/best.ckpt")
    results = model.predict(["a.jpg", "b.png"])   # paths, PIL images, numpy arrays, tensors
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from visionkit.errors import ConfigError


class Model:
    """A loaded model: ``task_name``, ``label_map``, ``preprocess`` and ``predict``.

    ``runner(images) -> raw outputs per image`` is the eager task or an exported runtime; the task
    class's ``decode`` turns raw outputs into results either way, so both give the same results.
    ``torch_threads``: torch's intra-op threads while the runner's input is read and prepared and
    the runner runs (None: as they are); a runtime with its own thread pool (onnxruntime) sets 1,
    see :func:`torch_threads`. Decoding its outputs into results keeps torch's threads.
    """

    def __init__(self, task_cls: type, meta: Mapping[str, Any], runner: Any, source: str, task: Any = None, torch_threads: int | None = None) -> None:  # fmt: skip
        from visionkit.data.labels import LabelMap
        from visionkit.data.transforms import Preprocess

        self.task_cls = task_cls
        self.task_name = str(meta["task"])
        self.meta = dict(meta)
        self.label_map = LabelMap.from_dict(meta["label_map"])
        self.preprocess = Preprocess(meta["preprocessing"])
        self.runner = runner
        self.source = source
        self.task = task  # the LightningModule (checkpoints only)
        self.torch_threads = torch_threads

    @property
    def class_names(self) -> list[str]:
        return list(self.label_map.names)

    def decode_options(self) -> dict[str, Any]:
        if self.task is not None:
            return self.task.decode_options()
        return dict(self.meta.get("decode_options") or {})

    def predict_batch(self, batch: Mapping[str, Any]) -> list[Any]:
        """One batch of ``visionkit.data.predict`` -> one result per image."""
        import torch

        with torch.inference_mode():
            if self.task is not None:
                return self.task.predict_step(batch, 0)
            with torch_threads(self.torch_threads):
                outputs = self.runner(list(batch["images"]))
            return self.task_cls.decode(outputs, list(batch["sizes"]), self.label_map, self.decode_options())  # fmt: skip

    def predict(self, images: Any, batch_size: int = 8, num_workers: int = 0) -> Any:
        """Results for ``images`` (a path, PIL image, array or tensor [3,H,W], or a list of them):
        a list of results for a list, one result for one image."""
        single = not isinstance(images, list | tuple)
        items = [images] if single else list(images)
        results = [r for _, batch_results in self.batches(items, batch_size, num_workers) for r in batch_results]  # fmt: skip
        return results[0] if single else results

    def batches(self, items: list[Any], batch_size: int = 8, num_workers: int = 0, keep_raw: bool = False) -> Iterator[tuple[dict[str, Any], list[Any]]]:  # fmt: skip
        """(batch, its results) for ``items`` in order, ``batch_size`` at a time, read by
        ``num_workers`` loader processes (visionkit.data.predict; ``keep_raw``: the batch keeps
        each decoded picture under ``"raw"``)."""
        from visionkit.data.predict import predict_loader

        loader = iter(predict_loader(items, self.preprocess, batch_size, num_workers, keep_raw))
        while True:
            with torch_threads(self.torch_threads):
                batch = next(loader, None)
            if batch is None:
                return
            yield batch, self.predict_batch(batch)

    def __repr__(self) -> str:
        return f"Model({self.task_name}, {self.label_map.num_classes} classes, from {self.source})"


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op thread count set to ``threads`` inside the block, restored after (None:
    unchanged). Beside onnxruntime, torch only decodes and pre- and post-processes; its idle OpenMP
    workers spin for a while after each parallel step, on the cores onnxruntime computes on next
    (2 cores, 400 images: onnxruntime's predict 218 -> 191 ms (classification) and 492 -> 419 ms
    (semantic segmentation) with one torch thread up to and through each run). The count is
    process-wide: blocks open in several Python threads at once (or nested) restore the count
    from before the first of them when the last one closes, whatever order they close in."""
    import torch

    if threads is None:
        yield
        return
    token = object()
    with _THREADS_LOCK:
        if not _THREAD_REQUESTS:
            _THREADS_BEFORE[0] = torch.get_num_threads()
        _THREAD_REQUESTS.append((token, int(threads)))
        torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        with _THREADS_LOCK:
            _THREAD_REQUESTS[:] = [r for r in _THREAD_REQUESTS if r[0] is not token]
            torch.set_num_threads(_THREAD_REQUESTS[-1][1] if _THREAD_REQUESTS else _THREADS_BEFORE[0])  # fmt: skip


# torch_threads' open blocks (token, threads), newest last, and the count before the first of them
_THREADS_LOCK = threading.Lock()
_THREAD_REQUESTS: list[tuple[object, int]] = []
_THREADS_BEFORE = [0]


def require_model_file(path: str | os.PathLike) -> Path:
    """``path`` as an existing file (ConfigError): the part of ``load`` that needs no torch, which
    ``runner.check_paths`` runs before the imports."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"no such model file: {path}")
    return path


def load(path: str | os.PathLike, device: str = "cpu") -> Model:
    """The model of a checkpoint or an exported file (``.onnx``, TorchScript ``.pt``/``.ts``).
    Keeps freed memory for reuse from then on (see :mod:`visionkit.allocator`)."""
    from visionkit.allocator import keep_freed_memory
    from visionkit.registries import TASKS

    path = require_model_file(path)
    keep_freed_memory()
    if path.suffix in EXPORTED:
        from visionkit import export

        return export.load_exported(path, device)

    from visionkit import checkpoints
    from visionkit.runner import load_task_from_checkpoint

    info = checkpoints.meta(checkpoints.load(path), path)
    task = for_prediction(load_task_from_checkpoint(path), device, inplace=True)
    meta = {**info, "label_map": task.label_map.to_dict(), "preprocessing": task.preprocess().spec}  # fmt: skip
    return Model(TASKS.get(meta["task"]), meta, task.predict_outputs, str(path), task=task)


def for_prediction(task: Any, device: str = "cpu", inplace: bool = False) -> Any:
    """``task`` as :func:`load` predicts with it: eval mode, BatchNorms folded into their convs and
    activations after them in place (faster, same outputs) and, on CPU, channels-last weights, so
    convolutions run NHWC without reordering (1.4-2x at 64 px). For prediction only (no training,
    no hooks that keep intermediate outputs); a copy unless ``inplace``."""
    import torch

    from visionkit.layers.fuse import fuse_conv_bn, inplace_activations

    task = inplace_activations(fuse_conv_bn(task, inplace=inplace)).to(device)
    if task.device.type == "cpu":
        task = task.to(memory_format=torch.channels_last)
    return task


# suffixes of `visionkit export` files
EXPORTED = (".onnx", ".pt", ".ts", ".torchscript")
