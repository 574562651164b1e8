"""Test-time augmentation (``tta=`` for ``test`` and ``predict``): the task's forward runs on
flipped and rescaled views of each image, and the views' outputs are mapped back to the original
image and merged, so everything downstream (metrics, exports, overlays) sees one ordinary output
in the original image's coordinates.

The merge follows the output, not the task's name:

* class logits ``[N,K]`` (classification) and dense logits ``[N,K,H,W]`` (semantic
  segmentation, un-flipped and resized back to the input's size): the views' softmax
  probabilities are averaged; the log of the mean is returned as the logits (softmax and argmax
  of it are the mean probabilities and their argmax);
* detections (a list of ``{"boxes", "scores", "labels"[, "masks"]}`` per image): boxes (and
  masks) are un-flipped and unscaled, then fused per class, by weighted boxes fusion (``wbf``,
  Solovyev et al. 2021: clusters of boxes over ``iou_thresh`` become their score-weighted mean,
  score = mean score x min(cluster size, views) / views; masks the score-weighted mean) or by
  ``nms`` over the union of the views' detections.

Scales: a dense model sees the image resized by the factor. torchvision detectors resize every
input to their own ``min_size``/``max_size`` (``GeneralizedRCNNTransform``), which would undo an
image resize, so for them those two sizes are scaled instead during the view (and restored); their
boxes come back in input pixels already.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from visionkit.errors import ConfigError

FLIPS = ("none", "hflip", "vflip")
BOX_MERGES = ("wbf", "nms")


@dataclass(frozen=True)
class TestTimeAugmentation:
    """The views (every flip at every scale) and how detections are merged."""

    __test__ = False  # not a pytest class

    flips: Sequence[str] = ("none", "hflip")
    scales: Sequence[float] = (1.0,)
    box_merge: str = "wbf"
    iou_thresh: float = 0.55
    max_detections: int = 100

    def __post_init__(self) -> None:
        bad = [f for f in self.flips if f not in FLIPS]
        if bad or not self.flips:
            raise ConfigError(f"tta.flips={list(self.flips)}: each one of {', '.join(FLIPS)}")
        if not self.scales or any(float(s) <= 0 for s in self.scales):
            raise ConfigError(f"tta.scales={list(self.scales)}: positive factors, at least one")
        if self.box_merge not in BOX_MERGES:
            raise ConfigError(f"tta.box_merge={self.box_merge!r}: one of {', '.join(BOX_MERGES)}")
        if not 0.0 < self.iou_thresh <= 1.0:
            raise ConfigError(f"tta.iou_thresh={self.iou_thresh}: must be in (0, 1]")

    @property
    def views(self) -> list[tuple[str, float]]:
        return [(f, float(s)) for s in self.scales for f in self.flips]

    # -- running the views ---------------------------------------------------------------------
    def __call__(self, forward: Callable[[Any], Any], images: Any, model: nn.Module) -> Any:
        """``forward(images)`` over every view, merged; see the module docstring."""
        if isinstance(images, torch.Tensor):
            return self._dense(forward, images)
        return self._detections(forward, list(images), model)

    def _dense(self, forward: Callable[[Any], Any], x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        total = None
        for flip, scale in self.views:
            view = x if scale == 1.0 else _resize(x, scale)
            out = forward(_flip(view, flip))
            if out.ndim == 4:
                out = _flip(out, flip)
                if tuple(out.shape[-2:]) != (h, w):
                    out = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False)
            probs = out.float().softmax(dim=1)
            total = probs if total is None else total + probs
        assert total is not None
        return (total / len(self.views)).clamp(min=1e-12).log()

    def _detections(self, forward: Callable[[Any], Any], images: list[torch.Tensor], model: nn.Module) -> list[dict[str, torch.Tensor]]:  # fmt: skip
        transforms = detector_transforms(model)
        per_image: list[list[dict[str, torch.Tensor]]] = [[] for _ in images]
        for flip, scale in self.views:
            if transforms:  # the detector resizes: scale its target size, not the image
                with scaled_sizes(transforms, scale):
                    outs = forward([_flip(img, flip) for img in images])
                ratio = 1.0
            else:
                outs = forward([_flip(_resize(img[None], scale)[0], flip) for img in images])
                ratio = scale
            for i, (img, out) in enumerate(zip(images, outs, strict=True)):
                size = tuple(img.shape[-2:]) if ratio == 1.0 else _scaled(img.shape[-2:], ratio)
                per_image[i].append(_unview(out, flip, ratio, size, tuple(img.shape[-2:])))
        return [self.merge(views) for views in per_image]

    def merge(self, views: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """One image's detections from its views, by ``box_merge``."""
        if self.box_merge == "nms":
            return nms_merge(views, self.iou_thresh, self.max_detections)
        return weighted_boxes_fusion(views, self.iou_thresh, self.max_detections)


def build_tta(spec: Any) -> TestTimeAugmentation | None:
    """``cfg.tta`` (a mapping of :class:`TestTimeAugmentation` fields, or null) -> the object."""
    if spec is None:
        return None
    from omegaconf import OmegaConf

    if OmegaConf.is_config(spec):
        spec = OmegaConf.to_container(spec, resolve=True)
    fields = set(TestTimeAugmentation.__dataclass_fields__) - {"__test__"}
    unknown = sorted(set(spec) - fields)
    if unknown:
        raise ConfigError(f"tta takes no key(s) {', '.join(f'tta.{k}' for k in unknown)}; it accepts {', '.join(sorted(fields))}")  # fmt: skip
    return TestTimeAugmentation(**spec)


def enable_tta(task: nn.Module, spec: Any) -> TestTimeAugmentation | None:
    """Make ``task``'s forward run the views and merge them (``cfg.tta``; null: nothing changes).

    The task's own forward is kept and called per view; every caller of ``task(images)`` (its
    test/predict steps, the predict command) gets the merged output.
    """
    tta = build_tta(spec)
    if tta is None:
        return None
    plain = type(task).forward.__get__(task)

    def forward(images: Any, *args: Any, **kwargs: Any) -> Any:
        if args or kwargs or task.training:
            return plain(images, *args, **kwargs)
        return tta(plain, images, task)

    task.forward = forward  # this instance only: checkpoints and other tasks are untouched
    task.tta = tta
    return tta


def tta_results(tta: TestTimeAugmentation) -> dict[str, Any]:
    """results.json's ``tta``: the views and the merge used."""
    return {"flips": list(tta.flips), "scales": [float(s) for s in tta.scales], "views": len(tta.views),
            "box_merge": tta.box_merge, "iou_thresh": tta.iou_thresh}  # fmt: skip


# -- geometry -------------------------------------------------------------------------------------
def _flip(x: torch.Tensor, flip: str) -> torch.Tensor:
    if flip == "hflip":
        return x.flip(-1)
    if flip == "vflip":
        return x.flip(-2)
    return x


def _scaled(size: Sequence[int], scale: float) -> tuple[int, int]:
    return max(1, round(int(size[0]) * scale)), max(1, round(int(size[1]) * scale))


def _resize(x: torch.Tensor, scale: float) -> torch.Tensor:
    if scale == 1.0:
        return x
    return F.interpolate(x, size=_scaled(x.shape[-2:], scale), mode="bilinear", align_corners=False)


def _unview(out: dict[str, torch.Tensor], flip: str, ratio: float, size: tuple[int, int], original: tuple[int, int]) -> dict[str, torch.Tensor]:  # fmt: skip
    """A view's detections in the original image's pixels (``size``: the view's image size)."""
    out = dict(out)
    boxes = out["boxes"].clone()
    h, w = size
    if flip == "hflip":
        boxes[:, [0, 2]] = w - boxes[:, [2, 0]]
    elif flip == "vflip":
        boxes[:, [1, 3]] = h - boxes[:, [3, 1]]
    if ratio != 1.0:
        boxes = boxes * boxes.new_tensor([original[1] / w, original[0] / h] * 2)
    out["boxes"] = boxes
    if "masks" in out and out["masks"].numel():
        masks = _flip(out["masks"].float(), flip)
        if tuple(masks.shape[-2:]) != tuple(original):
            masks = F.interpolate(masks, size=original, mode="bilinear", align_corners=False)
        out["masks"] = masks
    return out


def detector_transforms(model: nn.Module) -> list[nn.Module]:
    """The torchvision ``GeneralizedRCNNTransform`` modules inside ``model`` (resize to min_size)."""
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    return [m for m in model.modules() if isinstance(m, GeneralizedRCNNTransform)]


@contextlib.contextmanager
def scaled_sizes(transforms: list[nn.Module], scale: float) -> Iterator[None]:
    """Scale the transforms' public ``min_size``/``max_size`` for one view, then restore them."""
    saved = [(t.min_size, t.max_size) for t in transforms]
    try:
        for t in transforms:
            t.min_size = tuple(max(1, round(s * scale)) for s in t.min_size)
            t.max_size = max(1, round(t.max_size * scale))
        yield
    finally:
        for t, (lo, hi) in zip(transforms, saved, strict=True):
            t.min_size, t.max_size = lo, hi


# -- box merging ----------------------------------------------------------------------------------
def _cat(views: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    keys = [k for k in ("boxes", "scores", "labels", "masks") if all(k in v for v in views)]
    return {k: torch.cat([v[k] for v in views]) for k in keys}


def nms_merge(views: list[dict[str, torch.Tensor]], iou_thresh: float, max_detections: int) -> dict[str, torch.Tensor]:  # fmt: skip
    """Class-wise NMS over the union of the views' detections, best ``max_detections`` kept."""
    from torchvision.ops import batched_nms

    union = _cat(views)
    keep = batched_nms(union["boxes"].float(), union["scores"].float(), union["labels"], iou_thresh)
    return {k: v[keep[:max_detections]] for k, v in union.items()}


def weighted_boxes_fusion(views: list[dict[str, torch.Tensor]], iou_thresh: float, max_detections: int) -> dict[str, torch.Tensor]:  # fmt: skip
    """Weighted boxes fusion (Solovyev et al. 2021) of one image's views; see the module docstring."""
    from torchvision.ops import box_iou

    union = _cat(views)
    n_views = len(views)
    order = union["scores"].argsort(descending=True)
    boxes, scores, labels = union["boxes"][order].float(), union["scores"][order].float(), union["labels"][order]  # fmt: skip
    masks = union["masks"][order].float() if "masks" in union else None
    clusters: list[list[int]] = []
    fused: list[torch.Tensor] = []
    cluster_label: list[int] = []
    for i in range(len(boxes)):
        match = -1
        if fused:
            same = [j for j, lab in enumerate(cluster_label) if lab == int(labels[i])]
            if same:
                ious = box_iou(boxes[i : i + 1], torch.stack([fused[j] for j in same]))[0]
                best = int(ious.argmax())
                if float(ious[best]) > iou_thresh:
                    match = same[best]
        if match < 0:
            clusters.append([i])
            fused.append(boxes[i].clone())
            cluster_label.append(int(labels[i]))
        else:
            clusters[match].append(i)
            w = scores[clusters[match]]
            fused[match] = (boxes[clusters[match]] * w[:, None]).sum(0) / w.sum()
    out_scores = torch.stack([scores[c].mean() * min(len(c), n_views) / n_views for c in clusters]) if clusters else scores[:0]  # fmt: skip
    result = {
        "boxes": torch.stack(fused) if fused else boxes[:0],
        "scores": out_scores,
        "labels": torch.tensor(cluster_label, dtype=labels.dtype, device=labels.device)
        if clusters
        else labels[:0],
    }
    if masks is not None:
        result["masks"] = (
            torch.stack(
                [
                    (masks[c] * scores[c].view(-1, 1, 1, 1)).sum(0) / scores[c].sum()
                    for c in clusters
                ]
            )
            if clusters
            else masks[:0]
        )
    keep = result["scores"].argsort(descending=True)[:max_detections]
    return {k: v[keep] for k, v in result.items()}
