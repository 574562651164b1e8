"""VisionDataModule: what every format shares: config keys, pipelines, collate per task, loaders.

A format subclass says which tasks it serves and builds its split datasets in ``build_splits``.
Batches follow the task contracts:

* classification: ``(float32 [N,3,H,W] normalised, int64 [N])`` (float [N,K] with MixUp/CutMix or
  ``multi_label``);
* semantic_segmentation: ``(float32 [N,3,H,W] normalised, int64 [N,H,W])``, 255 = ignore;
* detection / instance_segmentation: ``(list of float32 [3,H,W] in 0..1, list of target dicts)``
  with ``boxes`` xyxy, contiguous ``labels``, ``iscrowd``, ``image_id``, ``masks`` (instances),
  ``removed`` (instances removed by augmentation, counted).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from visionkit.data.images import set_pixel_limit
from visionkit.data.labels import LabelMap, multi_hot
from visionkit.data.shuffling import EpochDataLoader, EpochRandomSampler
from visionkit.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    BatchMix,
    Normalize,
    Preprocess,
    Sanitize,
    ToFloat,
    build_pipeline,
)
from visionkit.data.validation import VERIFY, BadDataReport, require_root
from visionkit.errors import ConfigError

TASK_NAMES = ("classification", "semantic_segmentation", "detection", "instance_segmentation")
DETECTION_TASKS = ("detection", "instance_segmentation")
SPLITS = ("train", "val", "test")


class Collate:
    """Picklable collate function for one task (runs in DataLoader workers)."""

    def __init__(self, task: str, num_classes: int, multi_label: bool = False, mix: Any = None):
        self.task = task
        self.num_classes = num_classes
        self.multi_label = multi_label
        self.mix = mix

    def __call__(self, samples: list[tuple[Any, Any]]) -> tuple[Any, Any]:
        images = [s[0].as_subclass(torch.Tensor) for s in samples]
        targets = [s[1] for s in samples]
        if self.task in DETECTION_TASKS:
            return images, [_plain_target(t) for t in targets]
        batch = torch.stack(images)
        if self.task == "semantic_segmentation":
            return batch, torch.stack([t.as_subclass(torch.Tensor) for t in targets]).long()
        if self.multi_label:
            return batch, multi_hot(targets, self.num_classes)
        labels = torch.as_tensor(targets, dtype=torch.int64)
        if self.mix:
            return self.mix(batch, labels)
        return batch, labels


def _plain_target(target: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in target.items():
        if isinstance(value, torch.Tensor):
            value = value.as_subclass(torch.Tensor)
            if key == "boxes":
                value = value.float()
            elif key == "masks":
                value = value.to(torch.uint8)
        out[key] = value
    out.setdefault("removed", 0)
    return out


_NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def accepted_keys(cls: type) -> list[str]:
    """The ``data.*`` keys a datamodule class takes: the named parameters of each ``__init__`` in
    its constructor chain, as far as ``**kwargs`` hand them on (``task`` comes from the task)."""
    keys: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = list(inspect.signature(init).parameters.values())
        keys.update(p.name for p in params if p.kind in _NAMED and p.name not in ("self", "task"))
        if klass is VisionDataModule or not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    return sorted(keys)


class VisionDataModule(pl.LightningDataModule):
    """Shared base of every format; see the module docstring for batch formats."""

    SUPPORTED_TASKS: tuple[str, ...] = TASK_NAMES
    FORMAT = "base"

    def __init__(
        self,
        task: str = "classification",
        root: str | None = None,
        image_size: int = 64,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 2,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        train_transforms: Sequence[Any] | None = None,
        eval_transforms: Sequence[Any] | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        multi_label: bool = False,
        on_bad: str = "error",
        verify_images: str = "full",
        max_image_pixels: int | None = None,
        drop_last: bool = False,
        seed: int = 0,
        sampler: Any = None,
        **unknown: Any,
    ) -> None:
        super().__init__()
        if unknown:  # a key no constructor of the chain named: one message, not a TypeError
            raise ConfigError(
                f"data format '{self.FORMAT}' takes no key(s) "
                f"{', '.join(f'data.{k}' for k in sorted(unknown))}; it accepts: "
                f"{', '.join(accepted_keys(type(self)))}"
            )
        if task not in TASK_NAMES:
            raise ConfigError(f"unknown task '{task}'; tasks: {', '.join(TASK_NAMES)}")
        if task not in self.SUPPORTED_TASKS:
            raise ConfigError(
                f"data format '{self.FORMAT}' cannot serve task '{task}'; it serves "
                f"{', '.join(self.SUPPORTED_TASKS)}"
            )
        self.report = BadDataReport(on_bad, source=self.FORMAT)  # checks data.on_bad
        if verify_images not in VERIFY:
            raise ConfigError(f"data.verify_images must be one of {VERIFY}, got '{verify_images}'")
        for key, value in (("batch_size", batch_size), ("image_size", image_size)):
            if int(value) < 1:
                raise ConfigError(f"data.{key} must be >= 1, got {value}")
        if max_image_pixels is not None and (
            not isinstance(max_image_pixels, int) or max_image_pixels < 1
        ):
            raise ConfigError(
                f"data.max_image_pixels must be a positive integer or null, got {max_image_pixels!r}"
            )
        if int(num_workers) < 0:
            raise ConfigError(f"data.num_workers must be >= 0, got {num_workers}")
        if (mixup_alpha or cutmix_alpha) and task != "classification":
            raise ConfigError("data.mixup_alpha / data.cutmix_alpha apply to classification only")
        if (mixup_alpha or cutmix_alpha) and multi_label:
            raise ConfigError("data.mixup_alpha / cutmix_alpha cannot combine with multi_label")
        self.task = task
        self.root = Path(root or "data").expanduser()
        self.image_size = int(image_size)
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        self.num_workers = int(num_workers)
        self.pin_memory = bool(pin_memory)
        self.persistent_workers = bool(persistent_workers) and self.num_workers > 0
        self.train_specs = train_transforms
        self.eval_specs = eval_transforms
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.mixup_alpha = float(mixup_alpha)
        self.cutmix_alpha = float(cutmix_alpha)
        self.multi_label = bool(multi_label)
        self.on_bad = on_bad
        self.verify_images = verify_images
        self.max_image_pixels = set_pixel_limit(max_image_pixels)
        self.drop_last = bool(drop_last)
        self.seed = int(seed)
        # class-aware training sampler (visionkit.data.samplers): class_balanced | repeat_factor
        self.sampler_spec = sampler
        self.label_map: LabelMap | None = None
        self.datasets: dict[str, Dataset] = {}
        self._eval_pipeline: Any = None

    # -- to implement per format -------------------------------------------------------------
    def build_splits(self) -> tuple[LabelMap, dict[str, Any]]:
        """``(label map, {split: dataset})``; datasets have a settable ``transform`` attribute."""
        raise NotImplementedError

    def annotation_file(self, split: str) -> Path | None:
        """The COCO json of ``split`` for COCO-backed formats, else None."""
        return None

    def image_ids(self, split: str) -> list[int]:
        """Original image ids of ``split`` in dataset order (COCO-backed formats)."""
        ds = self._dataset(split)
        return [r.id for r in getattr(ds, "records", [])]

    def require_root(self) -> Path:
        """``root``, which a format that reads files needs as an existing folder (ConfigError)."""
        return require_root(self.FORMAT, self.root)

    def extra_results(self, stage: str = "run") -> dict[str, Any]:
        """results.json's ``data`` entry (stage ``run``): what setup skipped and noted, by kind
        (BadDataReport)."""
        if stage != "run":
            return {}
        return {"data": {"format": self.FORMAT, **self.report.to_dict()}}

    # -- Lightning hooks -----------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.label_map is not None:
            return
        label_map, datasets = self.build_splits()
        self.report.finish()
        self.label_map = label_map
        from visionkit.data.mix_transforms import bind_multi_image

        for split, ds in datasets.items():
            ds.transform = self.pipeline(train=split == "train")
            # mosaic / copy_paste draw other samples of the split (visionkit.data.mix_transforms)
            key = "data.train_transforms" if split == "train" else "data.eval_transforms"
            bind_multi_image(ds.transform, ds, self.task, split == "train", key)
            ds.max_pixels = self.max_image_pixels  # loader workers apply the same limit
        self.datasets = datasets

    @property
    def num_classes(self) -> int:
        return self._labels().num_classes

    @property
    def class_names(self) -> list[str]:
        return list(self._labels().names)

    def _labels(self) -> LabelMap:
        if self.label_map is None:
            raise ConfigError("call dm.prepare_data() and dm.setup() before reading classes")
        return self.label_map

    def has_split(self, split: str) -> bool:
        """Whether ``split`` has at least one sample."""
        if self.label_map is None:
            self.setup()
        ds = self.datasets.get(split)
        return ds is not None and len(ds) > 0

    # -- transforms ----------------------------------------------------------------------------
    def default_transforms(self, train: bool) -> list[Any]:
        """Used when ``train_transforms`` / ``eval_transforms`` are not given."""
        size = [self.image_size, self.image_size]
        if self.task in DETECTION_TASKS:  # detectors resize internally; eval keeps original pixels
            return [{"name": "hflip"}] if train else []
        steps: list[Any] = [{"name": "resize", "size": size, "antialias": True}]
        return [*steps, {"name": "hflip"}] if train else steps

    def finishing_steps(self) -> list[Any]:
        """Appended to every pipeline: Sanitize + float for boxes, else float + normalise."""
        if self.task in DETECTION_TASKS:
            return [Sanitize(), ToFloat()]
        return [Normalize(self.mean, self.std)]

    def pipeline(self, train: bool) -> v2.Compose:
        specs = self.train_specs if train else self.eval_specs
        if specs is None:
            specs = self.default_transforms(train)
        return v2.Compose([*build_pipeline(specs), *self.finishing_steps()])

    def preprocessing(self) -> dict[str, Any]:
        """The evaluation preprocessing as plain data, recorded in checkpoints so ``predict``,
        ``export`` and ``visionkit.load`` rebuild it without the data config."""
        from visionkit.tasks.base import plain

        specs = self.eval_specs if self.eval_specs is not None else self.default_transforms(False)
        return {
            "image_size": self.image_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "eval_transforms": [plain(spec) for spec in specs],
            "normalize": self.task not in DETECTION_TASKS,
        }

    def eval_transform(self, image: Any) -> torch.Tensor:
        """Any user picture (path, PIL of any mode, ndarray, tensor) -> model-ready float tensor."""
        if self._eval_pipeline is None:
            self._eval_pipeline = Preprocess(self.preprocessing())
        return self._eval_pipeline(image)

    # -- loaders -------------------------------------------------------------------------------
    def collate(self, train: bool) -> Collate:
        mix = None
        if train and (self.mixup_alpha or self.cutmix_alpha):
            mix = BatchMix(self.num_classes, self.mixup_alpha, self.cutmix_alpha)
        return Collate(self.task, self.num_classes, self.multi_label, mix)

    def _dataset(self, split: str) -> Any:
        if self.label_map is None:
            self.setup()
        ds = self.datasets.get(split)
        if ds is None or len(ds) == 0:
            raise ConfigError(
                f"data format '{self.FORMAT}' has no '{split}' split under {self.root}"
            )
        return ds

    def _loader(self, split: str, train: bool) -> DataLoader:
        dataset = self._dataset(split)
        shuffling: dict[str, Any] = {}
        if train:
            # epoch e's order and randomness are functions of (seed, e): a resumed run continues
            # the uninterrupted run's epochs (visionkit.data.shuffling). No `shuffle=` keyword:
            # Lightning reads `shuffle=False` as "not shuffled" when it swaps in a DistributedSampler.
            shuffling["sampler"] = EpochRandomSampler(dataset, seed=self.seed)
            if self.sampler_spec:  # also a function of (seed, epoch), sharded per rank itself
                from visionkit.data.samplers import build_sampler

                shuffling["sampler"] = build_sampler(
                    self.sampler_spec, dataset, self.task, self.num_classes, self.seed
                )
            shuffling["generator"] = torch.Generator().manual_seed(self.seed)
        return (EpochDataLoader if train else DataLoader)(
            dataset,
            batch_size=self.batch_size if train else self.eval_batch_size,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            collate_fn=self.collate(train),
            drop_last=self.drop_last and train,
            **shuffling,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    def predict_dataloader(self) -> DataLoader:
        split = "test" if self.has_split("test") else "val"
        return self._loader(split, train=False)
