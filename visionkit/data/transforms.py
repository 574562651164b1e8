"""Joint image/box/mask augmentation on torchvision.transforms.v2 + tv_tensors, and pipelines.

Samples are ``(tv_tensors.Image uint8, target)``; detection targets are dicts holding
``BoundingBoxes`` and ``Mask`` so geometry follows the image. Pipelines are YAML lists of TRANSFORMS
specs (a name or ``{name: key, **kwargs}``); the datamodule appends the final float conversion
(and normalisation for classification / semantic segmentation) and, for boxes, :class:`Sanitize`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from visionkit.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Sanitize(v2.Transform):
    """Clip boxes to the image, then remove boxes smaller than ``min_size`` and instances whose mask
    vanished; the number removed is added to ``target["removed"]`` (counted, never silent)."""

    def __init__(self, min_size: float = 1.0, min_mask_area: int = 1) -> None:
        super().__init__()
        self.min_size = min_size
        self.min_mask_area = min_mask_area

    def forward(self, *inputs: Any) -> Any:
        sample = inputs if len(inputs) > 1 else inputs[0]
        image, target = sample
        if not isinstance(target, dict) or "boxes" not in target:
            return sample
        boxes = v2.functional.clamp_bounding_boxes(target["boxes"])
        wh = boxes[:, 2:] - boxes[:, :2]
        keep = (wh >= self.min_size).all(dim=1)
        masks = target.get("masks")
        if masks is not None and len(masks):
            keep &= masks.flatten(1).sum(1) >= self.min_mask_area
        removed = int((~keep).sum())
        out = dict(target)
        out["boxes"] = tv_tensors.wrap(boxes[keep], like=target["boxes"])
        for key in ("labels", "iscrowd", "area"):
            if key in out and isinstance(out[key], torch.Tensor) and len(out[key]) == len(keep):
                out[key] = out[key][keep]
        if masks is not None:
            out["masks"] = tv_tensors.wrap(masks[keep], like=masks)
        out["removed"] = int(target.get("removed", 0)) + removed
        return image, out


class ToFloat(v2.Transform):
    """uint8 image -> float32 in 0..1 (masks and boxes untouched); the last step of every pipeline."""

    def __init__(self) -> None:
        super().__init__()
        self.convert = v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True)

    def forward(self, *inputs: Any) -> Any:
        return self.convert(*inputs)


class Normalize(v2.Transform):
    """uint8 or float image -> float32 normalised with ``mean``/``std`` (in 0..1 units)."""

    def __init__(
        self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
    ) -> None:
        super().__init__()
        self.steps = v2.Compose([ToFloat(), v2.Normalize(mean=list(mean), std=list(std))])

    def forward(self, *inputs: Any) -> Any:
        return self.steps(*inputs)


class ResizePad(v2.Transform):
    """Resize so the longer side is ``size`` (aspect kept), then pad bottom/right to a square."""

    def __init__(self, size: int, fill: int = 0) -> None:
        super().__init__()
        self.size = int(size)
        self.fill = fill

    def forward(self, *inputs: Any) -> Any:
        sample = inputs if len(inputs) > 1 else inputs[0]
        h, w = v2.functional.get_size(_first_image(sample))
        scale = self.size / max(h, w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        sample = v2.Resize((nh, nw), antialias=True)(sample)
        pad = [0, 0, self.size - nw, self.size - nh]
        fill = {tv_tensors.Image: self.fill, tv_tensors.Mask: 0, "others": 0}
        return v2.Pad(pad, fill=fill)(sample)


def _first_image(sample: Any) -> Any:
    if isinstance(sample, tv_tensors.Image):
        return sample
    if isinstance(sample, list | tuple):
        for item in sample:
            found = _first_image(item)
            if found is not None:
                return found
    return None


class Preprocess:
    """The evaluation preprocessing a checkpoint records (plain data, see
    ``VisionDataModule.preprocessing``): any user picture -> the model's float input.

    ``spec``: ``image_size``, ``mean``, ``std``, ``eval_transforms`` (TRANSFORMS specs) and
    ``normalize`` (False for detectors: images in 0..1, they normalise themselves). Picklable, so
    predict's loader workers run it. Two steps: :meth:`prepare` (the eval transforms, one picture
    at a time) and :meth:`finish` (to float and normalised; per pixel, so a batch of prepared
    images of one size takes it in one call with the same numbers)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = dict(spec)
        self.normalize = bool(spec.get("normalize", True))
        self.mean, self.std = list(spec["mean"]), list(spec["std"])
        steps = build_pipeline(spec.get("eval_transforms") or [])
        self.pipeline = v2.Compose(steps) if steps else None

    def __call__(self, image: Any) -> torch.Tensor:
        """Path, PIL image of any mode, ndarray or tensor -> float32 [3,H,W]."""
        from visionkit.data.images import as_uint8_tensor

        return self.to_input(as_uint8_tensor(image))

    def to_input(self, image_u8: torch.Tensor) -> torch.Tensor:
        """uint8 RGB [3,H,W] -> float32 [3,H',W'] model input."""
        return self.finish(self.prepare(image_u8))

    def prepare(self, image_u8: torch.Tensor) -> torch.Tensor:
        """uint8 RGB [3,H,W] -> the eval transforms' output (uint8 [3,H',W'])."""
        if self.pipeline is None:
            return image_u8
        return self.pipeline(tv_tensors.Image(image_u8)).as_subclass(torch.Tensor)

    def finish(self, images: torch.Tensor) -> torch.Tensor:
        """Prepared images [...,3,H,W] -> float32 in 0..1, normalised with ``mean``/``std`` unless
        ``normalize`` is False (the kernels of :class:`ToFloat` and :class:`Normalize`)."""
        from torchvision.transforms.v2 import functional as TF

        x = TF.to_dtype(images, torch.float32, scale=True)
        return TF.normalize(x, self.mean, self.std) if self.normalize else x


def build_pipeline(specs: Sequence[Any] | None) -> list[Any]:
    """The transforms listed by ``specs`` (TRANSFORMS names or ``{name: ..., **kw}`` mappings)."""
    from visionkit.registries import TRANSFORMS

    if specs is None:
        return []
    if isinstance(specs, str) or (not isinstance(specs, Sequence) and not _is_listconfig(specs)):
        raise ConfigError(
            f"a transform pipeline is a list of transform specs, got {type(specs).__name__}: "
            f"{specs!r}"
        )
    return [TRANSFORMS.build(spec) for spec in specs]


def _is_listconfig(obj: Any) -> bool:
    return type(obj).__name__ == "ListConfig"


class BatchMix:
    """MixUp / CutMix at the batch level (classification): ``(images, int targets) -> (images,
    soft targets [N,K])``; one of the enabled methods is picked per batch."""

    def __init__(self, num_classes: int, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0):
        choices = []
        if mixup_alpha > 0:
            choices.append(v2.MixUp(alpha=mixup_alpha, num_classes=num_classes))
        if cutmix_alpha > 0:
            choices.append(v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes))
        self.mix = v2.RandomChoice(choices) if choices else None

    def __bool__(self) -> bool:
        return self.mix is not None

    def __call__(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        if self.mix is None:
            return images, targets
        if targets.ndim != 1:
            raise ConfigError(
                "MixUp/CutMix need index targets; they cannot combine with multi_label"
            )
        return self.mix(images, targets)
