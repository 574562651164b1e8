"""Joint augmentation: boxes and masks follow the image (hypothesis), sanitize counts removals,
every TRANSFORMS entry builds and runs on a detection sample, pipelines and MixUp/CutMix."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torchvision import tv_tensors

from visionkit.data.transforms import BatchMix, Sanitize, build_pipeline
from visionkit.errors import ConfigError
from visionkit.plugins import load_builtins
from visionkit.registries import TRANSFORMS

load_builtins()

# transforms that keep axis-aligned boxes axis-aligned: mask box == transformed box (1 px)
EXACT = [
    {"name": "hflip", "p": 1.0},
    {"name": "vflip", "p": 1.0},
    {"name": "resize", "size": [37, 29]},
    {"name": "random_resized_crop", "size": [40, 40], "scale": [0.3, 1.0]},
    {"name": "random_crop", "size": [30, 30], "pad_if_needed": True},
    {"name": "pad", "padding": [3, 5, 7, 2]},
    {"name": "resize_pad", "size": 50},
    {"name": "scale_jitter", "target_size": [48, 48], "scale_range": [0.5, 1.5]},
    {"name": "affine", "degrees": 0, "translate": [0.2, 0.2], "scale": [0.8, 1.2]},
    {"name": "random_zoom_out", "side_range": [1.0, 2.0], "p": 1.0},
    {"name": "center_crop", "size": [30, 40]},
]
# rotations: the transformed box bounds the rotated mask
LOOSE = [{"name": "rotation", "degrees": 30}, {"name": "affine", "degrees": 20}]


def _sample(h: int, w: int, boxes: list[tuple[int, int, int, int]]):
    image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8)
    masks = torch.zeros(len(boxes), h, w, dtype=torch.uint8)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        masks[i, y0:y1, x0:x1] = 1
    target = {
        "boxes": tv_tensors.BoundingBoxes(
            torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            format="XYXY",
            canvas_size=(h, w),
        ),
        "labels": torch.arange(len(boxes)),
        "masks": tv_tensors.Mask(masks),
        "iscrowd": torch.zeros(len(boxes), dtype=torch.int64),
    }
    return tv_tensors.Image(image), target


@st.composite
def samples(draw):
    h, w = draw(st.integers(24, 48)), draw(st.integers(24, 48))
    n = draw(st.integers(1, 4))
    boxes = []
    for _ in range(n):
        x0, y0 = draw(st.integers(0, w - 4)), draw(st.integers(0, h - 4))
        x1, y1 = draw(st.integers(x0 + 3, w)), draw(st.integers(y0 + 3, h))
        boxes.append((x0, y0, x1, y1))
    return _sample(h, w, boxes)


def _mask_box(mask: torch.Tensor) -> torch.Tensor:
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float()


def _check(spec, sample, exact: bool) -> None:
    pipeline = build_pipeline([spec])
    image, target = sample
    for t in pipeline:
        image, target = t((image, target))
    image, target = Sanitize()((image, target))
    h, w = image.shape[-2:]
    assert target["masks"].shape[-2:] == (h, w)
    assert target["boxes"].canvas_size == (h, w)
    assert len(target["boxes"]) == len(target["masks"]) == len(target["labels"])
    for box, mask in zip(target["boxes"], target["masks"], strict=True):
        mbox = _mask_box(mask)
        box = box.as_subclass(torch.Tensor)
        if exact:
            assert torch.allclose(mbox, box, atol=1.0 + 1e-4), (spec, mbox, box)
        else:  # the mask lies inside the transformed box
            assert (mbox[:2] >= box[:2] - 1.0).all() and (mbox[2:] <= box[2:] + 1.0).all()


@pytest.mark.parametrize("spec", EXACT, ids=lambda s: s["name"])
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sample=samples())
def test_mask_box_equals_transformed_box(spec, sample) -> None:
    _check(spec, sample, exact=True)


@pytest.mark.parametrize("spec", LOOSE, ids=lambda s: f"{s['name']}{s['degrees']}")
@settings(max_examples=5, deadline=None)
@given(sample=samples())
def test_rotated_mask_inside_transformed_box(spec, sample) -> None:
    _check(spec, sample, exact=False)


def test_sanitize_counts_removed_instances() -> None:
    image, target = _sample(32, 32, [(0, 0, 8, 8), (20, 20, 30, 30), (4, 20, 12, 28)])
    crop = build_pipeline([{"name": "center_crop", "size": [12, 12]}])[0]
    image, target = crop((image, target))  # keeps [10, 22) x [10, 22): the first box vanishes
    sanitize = Sanitize()
    _, out = sanitize((image, target))
    kept = len(out["boxes"])
    assert kept == 2 and out["removed"] == 1
    assert out["boxes"].as_subclass(torch.Tensor).tolist() == [[10, 10, 12, 12], [0, 10, 2, 12]]
    assert len(out["masks"]) == len(out["labels"]) == len(out["iscrowd"]) == kept
    # a box whose mask is empty is removed too
    image, target = _sample(16, 16, [(2, 2, 8, 8)])
    target["masks"] = tv_tensors.Mask(torch.zeros(1, 16, 16, dtype=torch.uint8))
    assert Sanitize()((image, target))[1]["removed"] == 1


@pytest.mark.parametrize("name", TRANSFORMS.names())
def test_every_transform_runs_on_a_detection_sample(name: str) -> None:
    kwargs = {
        "random_resized_crop": {"size": [24, 24]},
        "random_crop": {"size": [16, 16]},
        "center_crop": {"size": [16, 16]},
        "resize": {"size": [20, 20]},
        "rotation": {"degrees": 10},
        "affine": {"degrees": 10},
        "scale_jitter": {"target_size": [32, 32]},
        "random_short_side_scale": {"min_size": [20, 24]},
        "pad": {"padding": 2},
        "gaussian_blur": {"kernel_size": 3},
        "resize_pad": {"size": 40},
    }.get(name, {})
    t = TRANSFORMS.build({"name": name, **kwargs})
    image, target = _sample(32, 28, [(2, 2, 20, 20), (10, 5, 26, 30)])
    if hasattr(t, "bind"):  # multi-image (mosaic, copy_paste): other samples to draw from
        t.bind([_sample(20, 24, [(1, 1, 9, 9)])])
    out_image, out_target = t((image, target))
    assert isinstance(out_image, tv_tensors.Image)
    assert out_target["masks"].shape[-2:] == out_image.shape[-2:]


def test_pipeline_must_be_a_list() -> None:
    with pytest.raises(ConfigError, match="list"):
        build_pipeline("hflip")
    assert build_pipeline(None) == []


def test_mixup_cutmix_give_soft_targets() -> None:
    images = torch.rand(6, 3, 8, 8)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    for kw in ({"mixup_alpha": 0.4}, {"cutmix_alpha": 1.0}):
        mixed, soft = BatchMix(3, **kw)(images, labels)
        assert soft.shape == (6, 3) and torch.allclose(soft.sum(1), torch.ones(6))
        assert mixed.shape == images.shape
    assert not BatchMix(3)


@pytest.mark.parametrize("normalize", [True, False])
def test_preprocess_finishes_a_batch_as_each_image_alone(normalize: bool) -> None:
    """Prepare (eval transforms) per picture, then finish (to float, normalise) a whole batch: the
    numbers of the one-step pipeline of ToFloat/Normalize, image by image."""
    from torchvision.transforms import v2

    from visionkit.data.transforms import Normalize, Preprocess, ToFloat

    mean, std = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
    spec = {"image_size": 24, "mean": mean, "std": std, "normalize": normalize}
    spec["eval_transforms"] = [{"name": "resize", "size": [24, 24], "antialias": True}]
    preprocess = Preprocess(spec)
    oracle = v2.Compose([*build_pipeline(spec["eval_transforms"]), Normalize(mean, std) if normalize else ToFloat()])  # fmt: skip
    g = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g) for h, w in ((30, 17), (24, 24), (9, 41))]  # fmt: skip
    prepared = [preprocess.prepare(im) for im in images]
    assert all(p.dtype == torch.uint8 and p.shape == (3, 24, 24) for p in prepared)
    batch = preprocess.finish(torch.stack(prepared))
    for image, finished in zip(images, batch, strict=True):
        expected = oracle(tv_tensors.Image(image)).as_subclass(torch.Tensor)
        assert torch.equal(finished, expected) and torch.equal(preprocess.to_input(image), expected)
