"""Mosaic and copy-paste: every output mask's tight box is the output box (hypothesis), boxes
follow the geometry (mosaic: each quadrant's scaling), crowd stays crowd, and the datamodule binds
them to the training set from YAML (COCO in its real format) and refuses them where they cannot
work."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as TF

from tests.data.test_transforms import _mask_box
from visionkit.data.mix_transforms import CopyPaste, Mosaic, mask_boxes
from visionkit.data.transforms import Sanitize
from visionkit.errors import ConfigError


def make(h: int, w: int, rects: list[tuple[int, int, int, int]], crowd: list[int]):
    """A sample whose boxes are its masks' tight boxes (rectangles, the last one an ellipse-ish)."""
    masks = torch.zeros(len(rects), h, w, dtype=torch.uint8)
    for i, (x0, y0, x1, y1) in enumerate(rects):
        masks[i, y0:y1, x0:x1] = 1
        if i % 2:  # a non-rectangular shape: cut a corner
            masks[i, y0, x0] = 0 if (x1 - x0 > 1 and y1 - y0 > 1) else 1
    target = {
        "boxes": tv_tensors.BoundingBoxes(mask_boxes(masks), format="XYXY", canvas_size=(h, w)),
        "labels": torch.arange(len(rects)) % 3,
        "iscrowd": torch.tensor(crowd, dtype=torch.int64),
        "masks": tv_tensors.Mask(masks),
        "image_id": 7,
    }
    return tv_tensors.Image(torch.randint(0, 256, (3, h, w), dtype=torch.uint8)), target


@st.composite
def samples(draw):
    h, w = draw(st.integers(12, 40)), draw(st.integers(12, 40))
    rects, crowd = [], []
    for _ in range(draw(st.integers(0, 3))):
        x0, y0 = draw(st.integers(0, w - 2)), draw(st.integers(0, h - 2))
        rects.append((x0, y0, draw(st.integers(x0 + 1, w)), draw(st.integers(y0 + 1, h))))
        crowd.append(draw(st.sampled_from([0, 0, 1])))
    return make(h, w, rects, crowd)


def check_consistent(image, target) -> None:
    h, w = image.shape[-2:]
    n = len(target["boxes"])
    assert target["boxes"].canvas_size == (h, w) and target["masks"].shape == (n, h, w)
    assert len(target["labels"]) == len(target["iscrowd"]) == n
    for box, mask in zip(target["boxes"], target["masks"], strict=True):
        if mask.any():
            assert torch.equal(box.as_subclass(torch.Tensor), _mask_box(mask)), (box, _mask_box(mask))  # fmt: skip


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=samples(), others=st.lists(samples(), min_size=1, max_size=3), size=st.integers(8, 48), seed=st.integers(0, 9))  # fmt: skip
def test_mosaic_masks_boxes_and_crowd_stay_consistent(first, others, size, seed) -> None:
    torch.manual_seed(seed)
    mosaic = Mosaic(size=size)
    drawn = []
    mosaic.bind(others)
    mosaic.other = lambda: drawn.append(others[int(torch.randint(len(others), ()))]) or drawn[-1]
    image, target = mosaic(first)
    assert image.shape[-2:] == (size, size)
    check_consistent(image, target)
    parts = [first, *drawn]
    # every instance kept (Sanitize decides later), crowd stays crowd, in quadrant order
    assert target["iscrowd"].tolist() == [c for p in parts for c in p[1]["iscrowd"].tolist()]
    assert target["labels"].tolist() == [c for p in parts for c in p[1]["labels"].tolist()]
    assert target["image_id"] == 7
    boxes = target["boxes"].as_subclass(torch.Tensor)
    assert (boxes >= 0).all() and (boxes <= size).all()  # on the canvas (exact scaling: below)
    image, target = Sanitize()((image, target))  # empty masks go, counted
    check_consistent(image, target)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=samples(), other=samples(), seed=st.integers(0, 9))
def test_copy_paste_masks_boxes_and_crowd_stay_consistent(first, other, seed) -> None:
    torch.manual_seed(seed)
    paste = CopyPaste(instance_p=0.7)
    paste.bind([other])
    image, target = paste(first)
    check_consistent(image, target)
    n = len(first[1]["labels"])
    assert target["iscrowd"][:n].tolist() == first[1]["iscrowd"].tolist()  # crowd stays crowd
    assert (target["iscrowd"][n:] == 0).all()  # only instances are pasted
    pasted = target["masks"][n:].bool().any(0) if len(target["masks"]) > n else None
    if pasted is not None:  # pasted pixels are the other image's, covered pixels left the masks
        assert not (target["masks"][:n].bool() & pasted).any()
        resized = TF.resize(other[0].as_subclass(torch.Tensor), list(image.shape[-2:]), antialias=True)  # fmt: skip
        assert torch.equal(image[:, pasted], resized[:, pasted])
        assert torch.equal(image[:, ~pasted], first[0][:, ~pasted])


def test_mosaic_quadrant_geometry() -> None:
    """One 20x20 image per quadrant, box (0,0,10,10) each: with the centre at (12, 12) of a 24
    canvas the boxes are the quadrants' top-left halves."""
    sample = make(20, 20, [(0, 0, 10, 10)], [0])
    mosaic = Mosaic(size=24, center=(0.5, 0.5))  # centre (12, 12)
    mosaic.bind([sample])
    _, target = mosaic(sample)
    assert target["boxes"].as_subclass(torch.Tensor).tolist() == [
        [0, 0, 6, 6], [12, 0, 18, 6], [0, 12, 6, 18], [12, 12, 18, 18]
    ]  # fmt: skip


def test_datamodule_binds_them_from_yaml(tmp_path: Path, formats) -> None:
    from tests.data.test_imbalance import _dm

    root = formats.coco(tmp_path / "coco", n=4)
    specs = [{"name": "mosaic", "size": 48}, {"name": "copy_paste"}, {"name": "hflip"}]
    dm = _dm("instance_segmentation", name="coco", root=str(root), train_transforms=specs)
    torch.manual_seed(0)  # mosaic draws its partners and centre from torch's RNG
    samples = [dm.datasets["train"][i % 4] for i in range(12)]
    for image, target in samples:
        assert image.shape[-2:] == (48, 48)
        check_consistent(image, target)
    # image 0's crowd region stays crowd wherever a mosaic keeps part of it
    assert any(int(target["iscrowd"].sum()) >= 1 for _, target in samples)
    import pickle  # loader workers get the dataset with its bound transforms

    copy = pickle.loads(pickle.dumps(dm.datasets["train"]))
    assert copy[1][0].shape[-2:] == (48, 48)
    with pytest.raises(ConfigError, match="must come first"):
        _dm("detection", name="coco", root=str(root), train_transforms=[{"name": "hflip"}, {"name": "mosaic"}])  # fmt: skip
    with pytest.raises(ConfigError, match="copy_paste' is for instance_segmentation"):
        _dm("detection", name="coco", root=str(root), train_transforms=[{"name": "copy_paste"}])
    with pytest.raises(ConfigError, match="training augmentation"):
        _dm("detection", name="coco", root=str(root), eval_transforms=[{"name": "mosaic"}])
