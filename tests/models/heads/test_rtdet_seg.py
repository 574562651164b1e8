"""rtdet_seg: output shapes, the mask loss against its NumPy formula, the ground-truth masks on the
prototype grid, and the batched post-processing (boxes and masks) against a per-image loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import batched_nms

from visionkit.errors import ConfigError
from visionkit.models.backbones.base import FeatureInfo
from visionkit.models.heads.rtdet import Assignment
from visionkit.models.heads.rtdet_seg import mask_loss, per_image_products
from visionkit.registries import HEADS

LEVELS = [FeatureInfo(8, 8), FeatureInfo(8, 16)]
K, P = 3, 4  # classes, prototypes


def head(**kw):
    torch.manual_seed(0)
    spec = {"name": "rtdet_seg", "min_size": 64, "max_size": 64, "num_convs": 1, "num_protos": P, **kw}  # fmt: skip
    return HEADS.build(spec, LEVELS, K)


def features_fn():
    conv = torch.nn.Conv2d(3, 8, 1)
    return conv, lambda x: [conv(x[..., ::8, ::8]), conv(x[..., ::16, ::16])]


def np_sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def test_outputs_in_training_and_evaluation() -> None:
    h = head(score_thresh=0.0, detections_per_img=5)
    conv, features = features_fn()
    images = [torch.rand(3, 48, 64), torch.rand(3, 64, 40)]
    mask = torch.zeros(1, 48, 64, dtype=torch.uint8)
    mask[0, 4:40, 4:30] = 1
    one = {"boxes": torch.tensor([[4.0, 4.0, 30.0, 40.0]]), "labels": torch.tensor([1]), "masks": mask}  # fmt: skip
    none = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long), "masks": torch.zeros(0, 64, 40, dtype=torch.uint8)}  # fmt: skip
    targets = [one, none]
    losses = h.train()(images, targets, features)
    assert set(losses) == {"loss_cls", "loss_box", "loss_mask"}
    assert all(torch.isfinite(v) for v in losses.values()) and losses["loss_mask"] > 0
    sum(losses.values()).backward()
    assert conv.weight.grad.abs().sum() > 0 and h.detector.protos[0].conv.weight.grad.abs().sum() > 0  # fmt: skip
    empty = h(images, [targets[1], targets[1]], features)  # no objects in the batch
    assert empty["loss_mask"] == 0 and empty["loss_box"] == 0
    with pytest.raises(ConfigError, match="task=instance_segmentation"):
        h(images, [{k: v for k, v in t.items() if k != "masks"} for t in targets], features)
    h.eval()
    with torch.no_grad():
        out = h(images, None, features)
    for o, im in zip(out, images, strict=True):
        assert o["boxes"].shape == (5, 4) and o["labels"].shape == o["scores"].shape == (5,)
        assert o["masks"].shape == (5, 1, *im.shape[-2:])
        assert o["masks"].min() >= 0 and o["masks"].max() <= 1


def test_mask_loss_follows_its_formula() -> None:
    torch.manual_seed(1)
    logits, targets = torch.randn(3, 6, 8), torch.rand(3, 6, 8)
    boxes = torch.tensor([[0.0, 0.0, 32.0, 24.0], [5.0, 3.0, 14.0, 9.0], [8.0, 8.0, 9.0, 9.0]])
    stride = 4.0
    want = 0.0
    x, t = logits.numpy().astype(np.float64), targets.numpy().astype(np.float64)
    for p in range(3):
        bce = -(t[p] * np.log(np_sigmoid(x[p])) + (1 - t[p]) * np.log(1 - np_sigmoid(x[p])))
        x1, y1, x2, y2 = boxes[p].numpy() / stride
        cy, cx = np.mgrid[0:6, 0:8] + 0.5
        inside = (cx >= x1) & (cx < x2) & (cy >= y1) & (cy < y2)
        want += (bce * inside).sum() / max((x2 - x1) * (y2 - y1), 1.0)
    assert mask_loss(logits, targets, boxes, stride).item() == pytest.approx(want, rel=1e-5)


def test_head_mask_loss_uses_the_assigned_boxes_and_positive_count() -> None:
    det = head().detector
    torch.manual_seed(2)
    coeffs, protos = torch.randn(2, 5, P), torch.randn(2, P, 4, 4)
    gt_masks = torch.rand(2, 2, 4, 4)
    gt_boxes = torch.tensor([[[0.0, 0.0, 16.0, 8.0], [4.0, 4.0, 12.0, 16.0]], [[0.0, 0.0, 16.0, 16.0], [0.0, 0.0, 0.0, 0.0]]])  # fmt: skip
    fg = torch.tensor([[True, False, True, True, False], [False, True, False, False, False]])
    idx = torch.tensor([[1, 0, 0, 1, 0], [0, 0, 0, 0, 0]])
    a = Assignment(fg, idx, gt_boxes, torch.zeros(2, 2, dtype=torch.long), torch.ones(2, 2, dtype=torch.bool), torch.tensor(4.0))  # fmt: skip
    want = 0.0
    for b, n in fg.nonzero().tolist():
        logits = (coeffs[b, n] @ protos[b].flatten(1)).view(1, 4, 4)
        want += mask_loss(logits, gt_masks[b, idx[b, n]][None], gt_boxes[b, idx[b, n]][None], 4.0).item()  # fmt: skip
    assert det.loss(coeffs, protos, gt_masks, a).item() == pytest.approx(want / 4.0, rel=1e-5)


def test_per_image_products_equal_a_loop() -> None:
    torch.manual_seed(3)
    protos = torch.randn(3, P, 5, 6)
    image = torch.tensor([0, 0, 2, 2, 2])  # image 1 has none
    coeffs = torch.randn(5, P)
    got = per_image_products(coeffs, image, protos)
    for m in range(5):
        torch.testing.assert_close(got[m], torch.einsum("k,khw->hw", coeffs[m], protos[image[m]]))
    assert per_image_products(coeffs[:0], image[:0], protos).shape == (0, 5, 6)


def test_target_masks_are_averaged_onto_the_prototype_grid() -> None:
    det = head().detector
    rng = np.random.default_rng(4)
    m = rng.integers(0, 2, (2, 16, 24)).astype(np.uint8)
    targets = [{"boxes": torch.zeros(2, 4), "masks": torch.from_numpy(m)}, {"boxes": torch.zeros(0, 4), "masks": torch.zeros(0, 16, 24, dtype=torch.uint8)}]  # fmt: skip
    sizes = torch.tensor([[16.0, 24.0], [16.0, 24.0]])
    got = det.target_masks(targets, sizes, (5, 6))  # the grid covers 20 x 24 input pixels
    want = np.zeros((2, 2, 5, 6))
    want[0, :, :4] = m.reshape(2, 4, 4, 6, 4).mean(axis=(2, 4))  # 4x4 blocks; padding is 0
    np.testing.assert_allclose(got.numpy(), want, atol=1e-6)
    # images of two sizes go one by one, to the same result for the same image
    other = {"boxes": torch.zeros(1, 4), "masks": torch.ones(1, 8, 8, dtype=torch.uint8)}
    mixed = det.target_masks([targets[0], other], torch.tensor([[16.0, 24.0], [8.0, 8.0]]), (5, 6))
    np.testing.assert_allclose(mixed[0].numpy(), want[0], atol=1e-6)
    assert mixed[1, 0, :2, :2].eq(1).all() and mixed[1, 0].sum() == 4 and mixed[1, 1].sum() == 0


def reference(det, logits, boxes, coeffs, protos, sizes, originals) -> list[dict]:
    """One image at a time and one mask at a time: top-k, torchvision's batched_nms per image,
    each mask ``sigmoid(c @ protos)`` upsampled, cropped to the box, resized to the original."""
    base, s = det.base, det.proto_stride
    out = []
    for i in range(len(logits)):
        scores = logits[i].sigmoid().flatten()
        top, index = scores.topk(min(base.pre_nms_top_n, len(scores)))
        keep = top > base.score_thresh
        top, index = top[keep], index[keep]
        point, labels = index // logits.shape[-1], index % logits.shape[-1]
        h, w = (int(v) for v in sizes[i].tolist())
        bx = boxes[i, point].clone()
        bx[:, 0::2] = bx[:, 0::2].clamp(0, w)
        bx[:, 1::2] = bx[:, 1::2].clamp(0, h)
        scaled = bx * (originals[i] / sizes[i]).flip(0).repeat(2)
        kept = batched_nms(scaled, top, labels, base.nms_thresh)[: base.detections_per_img]
        masks = []
        for j in kept.tolist():
            ml = (coeffs[i, point[j]] @ protos[i].flatten(1)).view(1, 1, *protos.shape[-2:])
            up = F.interpolate(ml, scale_factor=float(s), mode="bilinear", align_corners=False)
            prob = up[0, 0, :h, :w].sigmoid()
            ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
            x1, y1, x2, y2 = bx[j].tolist()
            prob = prob * ((xs >= x1) & (xs < x2) & (ys >= y1) & (ys < y2))
            size = tuple(int(v) for v in originals[i].tolist())
            if size != (h, w):
                prob = F.interpolate(prob[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]  # fmt: skip
            masks.append(prob)
        size = tuple(int(v) for v in originals[i].tolist())
        out.append({"boxes": scaled[kept], "labels": labels[kept], "scores": top[kept], "masks": torch.stack(masks)[:, None] if masks else torch.zeros(0, 1, *size)})  # fmt: skip
    return out


@pytest.mark.parametrize("mixed", [False, True])
def test_batched_postprocess_equals_a_per_image_loop(mixed: bool) -> None:
    det = head(score_thresh=0.3, nms_thresh=0.5, pre_nms_top_n=40, detections_per_img=7).detector
    torch.manual_seed(5)
    b, n = 4, 30
    logits = torch.randn(b, n, K) * 2
    logits[3] = -10.0  # an image without detections
    xy = torch.rand(b, n, 2) * 48
    boxes = torch.cat([xy - 4, xy + torch.rand(b, n, 2) * 24 + 2], -1)
    coeffs, protos = torch.randn(b, n, P), torch.randn(b, P, 16, 16)
    x = torch.zeros(b, 3, 64, 64)
    if mixed:  # resized and padded images of several sizes
        sizes = torch.tensor([[64.0, 64.0], [64.0, 48.0], [32.0, 64.0], [64.0, 64.0]])
        originals = torch.tensor([[128.0, 128.0], [64.0, 48.0], [40.0, 80.0], [64.0, 64.0]])
    else:  # one size, resized (the common case: every mask at once)
        sizes = torch.tensor([[64.0, 64.0]] * b)
        originals = torch.tensor([[96.0, 96.0]] * b)
    images = [torch.zeros(3, *(int(v) for v in o.tolist())) for o in originals]
    got = det.postprocess(logits, boxes, coeffs, protos, x, sizes, originals, images)
    want = reference(det, logits, boxes, coeffs, protos, sizes, originals)
    assert [len(g["boxes"]) for g in got] == [len(w["boxes"]) for w in want]
    assert len(want[0]["boxes"]) == 7 and len(want[3]["boxes"]) == 0
    boxes_only = det.base.postprocess(logits, boxes, sizes, originals)  # the rtdet head's own
    for g, w, r in zip(got, want, boxes_only, strict=True):
        for key in ("boxes", "scores", "masks"):
            torch.testing.assert_close(g[key], w[key], atol=1e-5, rtol=1e-5)
        assert g["labels"].tolist() == w["labels"].tolist() == r["labels"].tolist()
        torch.testing.assert_close(g["boxes"], r["boxes"])
    # one image alone (the exported graph's path: its input unpadded) gives its part of the batch
    alone_x = x[1:2, :, : int(sizes[1, 0]), : int(sizes[1, 1])]
    (alone,) = det.postprocess(logits[1:2], boxes[1:2], coeffs[1:2], protos[1:2], alone_x, sizes[1:2], originals[1:2], images[1:2])  # fmt: skip
    for key in ("boxes", "scores", "masks", "labels"):
        torch.testing.assert_close(alone[key], got[1][key])


def test_bad_options_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"rtdet_seg: unknown option\(s\) \['num_proto'\].*Did you mean num_protos\?"):  # fmt: skip
        head(num_proto=3)
    with pytest.raises(ConfigError, match="num_protos"):
        head(num_protos=0)
    with pytest.raises(ConfigError, match="equal channels"):
        HEADS.build({"name": "rtdet_seg"}, [FeatureInfo(8, 8), FeatureInfo(16, 16)], 3)
    assert head(topk=3, size_divisible=16).detector.transform.size_divisible == 16
