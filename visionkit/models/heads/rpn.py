"""torchvision's region proposal network with its per-image loops done for the whole batch.

torchvision's ``RegionProposalNetwork`` assigns anchors to ground truth (IoU, matcher) and filters
proposals (clip, small boxes, score threshold) one image at a time: some 30 small tensor ops per
image and step. :class:`BatchedRPN` computes the same thing for all images at once (the ground truth
padded with boxes no anchor can match), with the same element-wise float operations, so the
results are bit-identical (``tests/models/heads/test_rpn.py`` compares them); only the NMS, whose
float details depend on each image's own boxes, still runs per image, as torchvision calls it.
Under export (tracing, scripting) torchvision's own methods run.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.models.detection.rpn import RegionProposalNetwork
from torchvision.ops import boxes as box_ops

from visionkit.layers.roi_align import exporting


def batched_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """[N, G, A] IoU of ``boxes1`` [N, G, 4] with ``boxes2`` [N, A, 4] (xyxy): torchvision's
    ``box_iou`` formula per image, element for element."""
    area1 = (boxes1[..., 2] - boxes1[..., 0]) * (boxes1[..., 3] - boxes1[..., 1])
    area2 = (boxes2[..., 2] - boxes2[..., 0]) * (boxes2[..., 3] - boxes2[..., 1])
    lt = torch.max(boxes1[:, :, None, :2], boxes2[:, None, :, :2])
    rb = torch.min(boxes1[:, :, None, 2:], boxes2[:, None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    if not wh.is_floating_point():  # torchvision's _upcast
        wh = wh.float()
    inter = wh[..., 0] * wh[..., 1]
    union = area1[:, :, None] + area2[:, None, :] - inter
    return inter / union


class BatchedRPN(RegionProposalNetwork):
    """``RegionProposalNetwork`` whose target assignment and proposal filtering run batched.

    No state of its own: :meth:`adopt` turns a built torchvision RPN into one (same parameters,
    same state-dict keys).
    """

    @classmethod
    def adopt(cls, rpn: RegionProposalNetwork) -> BatchedRPN:
        """The same module, with the batched methods."""
        rpn.__class__ = cls
        return rpn  # type: ignore[return-value]

    def assign_targets_to_anchors(
        self, anchors: list[Tensor], targets: list[dict[str, Tensor]]
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Per image: anchor labels (1 object, 0 background, -1 ignored) and matched boxes."""
        counts = [len(t["boxes"]) for t in targets]
        same = all(a.shape == anchors[0].shape for a in anchors)
        if exporting() or not same or max(counts, default=0) == 0:
            return super().assign_targets_to_anchors(anchors, targets)
        matcher = self.proposal_matcher
        anchors_b = torch.stack(anchors)  # [N, A, 4]
        gt = torch.nn.utils.rnn.pad_sequence([t["boxes"] for t in targets], batch_first=True)
        n, g = gt.shape[:2]
        real = torch.arange(g, device=gt.device)[None, :] < torch.tensor(counts, device=gt.device)[:, None]  # fmt: skip
        # padded boxes: quality -1, below every real IoU, so they never win a max over boxes
        quality = batched_box_iou(gt, anchors_b).masked_fill_(~real[:, :, None], -1.0)
        matched_vals, matches = quality.max(dim=1)  # [N, A]
        all_matches = matches.clone()
        below = matched_vals < matcher.low_threshold
        between = (matched_vals >= matcher.low_threshold) & (matched_vals < matcher.high_threshold)
        matches[below] = matcher.BELOW_LOW_THRESHOLD
        matches[between] = matcher.BETWEEN_THRESHOLDS
        if matcher.allow_low_quality_matches:
            # each real box's best anchors keep their match (padded boxes: +inf, never equal)
            best = quality.max(dim=2).values.masked_fill_(~real, float("inf"))
            update = (quality == best[:, :, None]).any(dim=1)
            matches = torch.where(update, all_matches, matches)
        images = torch.arange(n, device=gt.device)[:, None]
        matched_gt = gt[images, matches.clamp(min=0)]  # [N, A, 4]
        labels = (matches >= 0).to(dtype=torch.float32)
        labels[matches == matcher.BELOW_LOW_THRESHOLD] = 0.0
        labels[matches == matcher.BETWEEN_THRESHOLDS] = -1.0
        # an image without boxes: all background, matched to zeros, as torchvision
        empty = [i for i, c in enumerate(counts) if c == 0]
        if empty:
            matched_gt[empty] = 0.0
            labels[empty] = 0.0
        return list(labels.unbind(0)), list(matched_gt.unbind(0))

    def filter_proposals(
        self,
        proposals: Tensor,
        objectness: Tensor,
        image_shapes: list[tuple[int, int]],
        num_anchors_per_level: list[int],
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Top-n per level, clip, drop small and low-scoring boxes (batched), NMS per image."""
        if exporting():
            return super().filter_proposals(proposals, objectness, image_shapes, num_anchors_per_level)  # fmt: skip
        num_images = proposals.shape[0]
        device = proposals.device
        objectness = objectness.detach().reshape(num_images, -1)
        counts = num_anchors_per_level
        levels = torch.cat([torch.full((k,), i, dtype=torch.int64, device=device) for i, k in enumerate(counts)])  # fmt: skip
        levels = levels.reshape(1, -1).expand_as(objectness)
        top_n_idx = self._get_top_n_idx(objectness, num_anchors_per_level)
        batch_idx = torch.arange(num_images, device=device)[:, None]
        objectness = objectness[batch_idx, top_n_idx]
        levels = levels[batch_idx, top_n_idx]
        proposals = proposals[batch_idx, top_n_idx]
        scores = torch.sigmoid(objectness)
        boxes = _clip(proposals, image_shapes)
        ws, hs = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
        keep = (ws >= self.min_size) & (hs >= self.min_size) & (scores >= self.score_thresh)
        final_boxes, final_scores = [], []
        for i in range(num_images):
            idx = torch.where(keep[i])[0]
            b, s, lvl = boxes[i, idx], scores[i, idx], levels[i, idx]
            kept = box_ops.batched_nms(b, s, lvl, self.nms_thresh)[: self.post_nms_top_n()]
            final_boxes.append(b[kept])
            final_scores.append(s[kept])
        return final_boxes, final_scores


def _clip(boxes: Tensor, image_shapes: list[tuple[int, int]]) -> Tensor:
    """``clip_boxes_to_image`` for [N, K, 4] boxes, image i to ``image_shapes[i]`` (h, w)."""
    x, y = boxes[..., 0::2], boxes[..., 1::2]
    if all(tuple(s) == tuple(image_shapes[0]) for s in image_shapes):
        height, width = image_shapes[0]
        x, y = x.clamp(min=0, max=width), y.clamp(min=0, max=height)
    else:
        sizes = torch.tensor(image_shapes, dtype=boxes.dtype, device=boxes.device)
        zero = torch.zeros((), dtype=boxes.dtype, device=boxes.device)
        x = torch.minimum(torch.maximum(x, zero), sizes[:, 1, None, None])
        y = torch.minimum(torch.maximum(y, zero), sizes[:, 0, None, None])
    return torch.stack((x, y), dim=boxes.dim()).reshape(boxes.shape)
