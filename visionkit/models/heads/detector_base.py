"""Shared plumbing of the torchvision detector heads (fasterrcnn, retinanet, fcos, maskrcnn).

The task owns the backbone and neck; the detector receives their features through
:class:`TaskFeatures`, an adapter that holds a *callable* (not a module), so backbone parameters
are registered once (in the task) and never duplicated in the state dict or optimizer groups.

Head contract: ``forward(images, targets, features)`` with ``images`` a list of float [3,H,W] in
0..1, ``targets`` (training) dicts with ``boxes``/``labels`` (contiguous 0..K-1) [/``masks``],
``features`` a callable ``tensor -> list of maps``. Training returns a dict of losses; evaluation
returns per image ``boxes`` (xyxy, input pixels), ``labels`` (0..K-1), ``scores`` [, ``masks``
float [M,1,H,W]]. The torchvision label shift is applied via ``visionkit.data.labels``.
"""

from __future__ import annotations

import difflib
import inspect
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn
from torchvision.models.detection.anchor_utils import AnchorGenerator

from visionkit.data.labels import from_detector_labels, to_detector_labels
from visionkit.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from visionkit.errors import ConfigError
from visionkit.models.backbones.base import FeatureInfo

FeatureFn = Callable[[torch.Tensor], list[torch.Tensor]]


class TaskFeatures(nn.Module):
    """Stands in for torchvision's ``backbone``: calls the task's feature function (not owned)."""

    def __init__(self, out_channels: int) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.fn: FeatureFn | None = None

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        if self.fn is None:
            raise RuntimeError("detector head called without a feature function")
        maps = self.fn(x)
        return OrderedDict(zip(level_names(maps), maps, strict=True))


def level_names(levels: Sequence[object]) -> list[str]:
    """Names of the feature levels as :class:`TaskFeatures` hands them on (the RoI poolers' keys)."""
    return [str(i) for i in range(len(levels))]


def common_channels(feature_info: Sequence[FeatureInfo], head: str) -> int:
    """torchvision detectors need one channel count over all levels (use the ``fpn`` neck)."""
    channels = {f.channels for f in feature_info}
    if len(channels) != 1:
        raise ConfigError(
            f"{head}: feature levels have channels {[f.channels for f in feature_info]}; the "
            "detector needs equal channels: add a neck (model/neck=fpn)"
        )
    return channels.pop()


def anchor_generator(
    feature_info: Sequence[FeatureInfo],
    anchor_sizes: Sequence[Sequence[float]] | None,
    aspect_ratios: Sequence[float],
    scale: float,
    head: str,
) -> AnchorGenerator:
    """One size tuple per feature level; default ``scale * reduction`` per level."""
    if anchor_sizes is None:
        anchor_sizes = [[scale * f.reduction] for f in feature_info]
    sizes = tuple(tuple(float(s) for s in level) for level in anchor_sizes)
    if len(sizes) != len(feature_info):
        raise ConfigError(
            f"{head}: anchor_sizes has {len(sizes)} levels but the features have "
            f"{len(feature_info)} (config key model.head.anchor_sizes)"
        )
    ratios = (tuple(float(r) for r in aspect_ratios),) * len(sizes)
    return AnchorGenerator(sizes, ratios)


def _init_keywords(classes: Sequence[type]) -> set[str]:
    """Named keyword parameters of the ``__init__`` of each class (nn.Module's excluded)."""
    return {
        name
        for cls in classes
        if issubclass(cls, nn.Module) and cls is not nn.Module
        for name, p in inspect.signature(cls.__init__).parameters.items()
        if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and name != "self"
    }


def check_detector_options(
    name: str, head_class: type, detector_class: type, options: dict[str, Any]
) -> None:
    """torchvision detectors hand unknown keywords to their image transform, which ignores them:
    reject any key no constructor in the chain takes, so a typo in ``model.head`` is not lost."""
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    known = _init_keywords([*detector_class.__mro__, GeneralizedRCNNTransform])
    ours = _init_keywords(head_class.__mro__) - {"feature_info", "num_classes"}
    detail = f"; {detector_class.__name__} and its image transform take no such keyword"
    reject_unknown_options(name, options, known, ours | known, detail)


def reject_unknown_options(
    name: str,
    options: dict[str, Any],
    accepted: Iterable[str],
    names: Iterable[str],
    detail: str = "",
) -> None:
    """One ConfigError for the ``model.head`` keys not in ``accepted``, with the closest of
    ``names`` (and the shared :class:`DetectorOptions` keys) as a hint; ``detail`` follows the
    list (why the keys are refused)."""
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        candidates = {*names, *(f.name for f in fields(DetectorOptions))}
        hints = [m for k in unknown for m in difflib.get_close_matches(k, candidates, n=1)]
        hint = f" Did you mean {', '.join(hints)}?" if hints else ""
        raise ConfigError(f"{name}: unknown option(s) {unknown} (config keys model.head.*){detail}.{hint}")  # fmt: skip


def image_transform_options(
    min_size: int, max_size: int | None, image_mean: Sequence[float], image_std: Sequence[float]
) -> dict[str, Any]:
    """Keywords of the detector's image transform (resize and normalise), as torchvision names them.

    ``max_size`` None keeps torchvision's ratio of its defaults (800, 1333): ``min_size * 1333 / 800``.
    """
    if int(min_size) < 1 or (max_size is not None and int(max_size) < int(min_size)):
        raise ConfigError(
            f"model.head.min_size must be >= 1 and model.head.max_size >= min_size, got "
            f"{min_size} and {max_size}"
        )
    return {
        "min_size": int(min_size),
        "max_size": int(max_size) if max_size is not None else round(int(min_size) * 1333 / 800),
        "image_mean": list(image_mean),
        "image_std": list(image_std),
    }


@dataclass(frozen=True)
class DetectorOptions:
    """What every detector head takes besides its own parts (config keys ``model.head.*``): the
    anchors (``anchor_sizes`` per level, default from ``anchor_scale``; ``aspect_ratios``), the
    post-processing and the detector's image transform (resize to ``min_size``/``max_size``,
    normalise with ``image_mean``/``image_std``)."""

    anchor_sizes: Sequence[Sequence[float]] | None = None
    aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0)
    anchor_scale: float = 4.0
    score_thresh: float = 0.05
    detections_per_img: int = 100
    min_size: int = 800
    max_size: int | None = None
    image_mean: Sequence[float] = IMAGENET_MEAN
    image_std: Sequence[float] = IMAGENET_STD

    @classmethod
    def pop(cls, options: dict[str, Any], **defaults: Any) -> DetectorOptions:
        """Take the shared options out of a head's keywords (what stays is the detector's own);
        ``defaults``: the head's own defaults (fcos: ``score_thresh=0.2``)."""
        given = {f.name: options.pop(f.name) for f in fields(cls) if f.name in options}
        return cls(**{**defaults, **given})

    def anchors(self, feature_info: Sequence[FeatureInfo], head: str, octaves: int = 1) -> AnchorGenerator:  # fmt: skip
        """``anchor_sizes``, default ``anchor_scale * reduction * 2^(k/octaves)`` for each
        ``k < octaves`` per level (RetinaNet: 3), with ``aspect_ratios``."""
        sizes = self.anchor_sizes
        if sizes is None:
            sizes = [[self.anchor_scale * f.reduction * 2 ** (k / octaves) for k in range(octaves)] for f in feature_info]  # fmt: skip
        return anchor_generator(feature_info, sizes, self.aspect_ratios, self.anchor_scale, head)

    def detector_kwargs(self, prefix: str = "") -> dict[str, Any]:
        """Keywords for the torchvision detector (``prefix``: Faster R-CNN's ``box_``)."""
        return {
            **image_transform_options(
                self.min_size, self.max_size, self.image_mean, self.image_std
            ),
            f"{prefix}score_thresh": self.score_thresh,
            f"{prefix}detections_per_img": self.detections_per_img,
        }


def anchor_labels(labels: torch.Tensor, matched: torch.Tensor) -> torch.Tensor:
    """Each anchor's detector class from torchvision's matcher output ``matched`` [A] (index of the
    matched box, or -1 background, -2 between the IoU thresholds): the class where matched, else
    ``matched`` itself."""
    out = matched.clone()
    fg = matched >= 0
    out[fg] = labels[matched[fg]]
    return out


def class_weighted_focal_loss(
    logits: torch.Tensor, labels: torch.Tensor, class_weight: torch.Tensor
) -> torch.Tensor:
    """Sum over anchors of ``w_a * sum_c FL(logits[a, c], onehot[a, c])``, torchvision's sigmoid
    focal loss (alpha 0.25, gamma 2), where ``w_a`` is the weight of anchor ``a``'s class (``labels``
    [A] >= 0, indexing ``class_weight`` [C]), 1 for background (-1); other labels (-2) are ignored.
    With every weight 1 it is exactly the unweighted sum torchvision's RetinaNet and FCOS use."""
    from torchvision.ops import sigmoid_focal_loss

    valid = labels >= -1
    logits, labels = logits[valid], labels[valid]
    fg = labels >= 0
    target = torch.zeros_like(logits)
    target[fg, labels[fg]] = 1.0
    per_anchor = sigmoid_focal_loss(logits, target, reduction="none").sum(dim=-1)
    weight = torch.ones_like(per_anchor)
    weight[fg] = class_weight.to(per_anchor)[labels[fg]]
    return (weight * per_anchor).sum()


class DetectorHead(nn.Module):
    """Base: holds ``self.detector`` (a torchvision detector whose backbone is TaskFeatures).

    ``__init__`` does what every detector head needs first: rejects unknown ``options`` (the extra
    ``model.head`` keys passed on to ``detector_class``), checks that the levels share one channel
    count (``self.channels``) and creates the adapter the detector reads features through.
    """

    detector: nn.Module
    adapter: TaskFeatures
    takes_class_weights = False  # detector.head.compute_loss reads a class_weight buffer

    def __init__(
        self,
        name: str,
        detector_class: type[nn.Module],
        feature_info: Sequence[FeatureInfo],
        options: dict[str, Any],
    ) -> None:
        super().__init__()
        check_detector_options(name, type(self), detector_class, options)
        self.head_name = name
        self.channels = common_channels(feature_info, name)
        self.adapter = TaskFeatures(self.channels)

    def forward(
        self,
        images: list[torch.Tensor],
        targets: list[dict[str, torch.Tensor]] | None,
        features: FeatureFn,
    ) -> Any:
        if targets is not None:
            targets = [{**t, "labels": to_detector_labels(t["labels"])} for t in targets]
        self.adapter.fn = features
        try:
            out = self.detector(images, targets)
        finally:
            self.adapter.fn = None
        if isinstance(out, dict):  # training: losses
            return out
        return [{**d, "labels": from_detector_labels(d["labels"])} for d in out]

    def set_class_weights(self, weights: Sequence[float]) -> None:
        """Weight the classification loss per class (``task.class_weights``, one per class 0..K-1):
        sets ``detector.head.class_weight`` (detector classes, background first) where the head's
        loss reads it (``takes_class_weights``), else a ConfigError naming the head."""
        if not self.takes_class_weights:
            raise ConfigError(
                f"task.class_weights: the {self.head_name} head's classification loss takes no "
                "class weights; the focal losses of model/head=retinanet and model/head=fcos do "
                "(or use data.sampler=repeat_factor)"
            )
        self.detector.head.class_weight = torch.tensor([1.0, *(float(w) for w in weights)])
