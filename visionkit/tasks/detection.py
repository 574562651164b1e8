"""Object detection: backbone -> fpn neck -> torchvision detector head; COCO mAP.

Validation mAP comes from torchmetrics MeanAveragePrecision (``metric_backend``:
``faster_coco_eval`` or ``pycocotools``). The test mAP comes from
:class:`~visionkit.evaluation.coco_evaluator.CocoEvaluator` with the same backend: it exports
``detections.json`` and evaluates exactly that file against the data's ground truth (DDP-aware).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torchmetrics.detection import MeanAveragePrecision

from visionkit.data.labels import LabelMap
from visionkit.errors import ConfigError
from visionkit.evaluation.coco_evaluator import CocoEvaluator
from visionkit.evaluation.coco_results import check_backend
from visionkit.predictions import Detections, to_original_size
from visionkit.tasks.base import BaseTask, class_weight_list

Target = dict[str, Any]


def drop_crowd(target: Target) -> Target:
    """Training targets without crowd regions (they are for evaluation only)."""
    crowd = target.get("iscrowd")
    if crowd is None or not bool(crowd.any()):
        return target
    keep = crowd == 0
    out = dict(target)
    for key in ("boxes", "labels", "masks", "iscrowd"):
        if key in out:
            out[key] = out[key][keep]
    return out


class DetectionTask(BaseTask):
    """Batches ``(list of images [3,H,W] in 0..1, list of target dicts)`` (see visionkit.data).

    ``metric_backend``: COCO evaluation backend; ``overlay_score_thresh``: minimum score drawn in
    pictures; ``mask_threshold``: mask probability cut for exports and metrics; ``class_weights``:
    one weight per class for the head's classification loss (the focal losses of retinanet and
    fcos; other heads: ConfigError).
    """

    task_name = "detection"
    iou_types: tuple[str, ...] = ("bbox",)

    def __init__(
        self,
        *args: Any,
        metric_backend: str = "faster_coco_eval",
        overlay_score_thresh: float = 0.5,
        mask_threshold: float = 0.5,
        class_weights: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            *args,
            metric_backend=metric_backend,
            overlay_score_thresh=overlay_score_thresh,
            mask_threshold=mask_threshold,
            class_weights=class_weights,
            **kwargs,
        )
        if class_weights is not None:
            weights = class_weight_list(class_weights, self.num_classes)
            setter = getattr(self.head, "set_class_weights", None)
            if setter is None:
                raise ConfigError(f"task.class_weights: {type(self.head).__name__} takes no class weights")  # fmt: skip
            setter(weights)
        self.metric_backend = check_backend(metric_backend)
        self.overlay_score_thresh = overlay_score_thresh
        self.mask_threshold = mask_threshold
        iou = self.iou_types[0] if len(self.iou_types) == 1 else self.iou_types
        self.val_map = MeanAveragePrecision(iou_type=iou, backend=self.metric_backend)
        self.evaluator: CocoEvaluator | None = None  # built for each test run
        self.test_summary: dict[str, Any] = {}

    # -- model -------------------------------------------------------------------------------
    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """Per-image detections (eval mode): boxes xyxy in input pixels, labels 0..K-1, scores."""
        return self.head(list(images), None, self.features)

    def training_step(self, batch: tuple[list, list], batch_idx: int) -> torch.Tensor:
        images, targets = batch
        targets = [drop_crowd(t) for t in targets]
        losses = self.head(list(images), targets, self.features)
        loss = sum(losses.values())
        n = len(images)
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, batch_size=n)
        return loss

    # -- validation (torchmetrics) -----------------------------------------------------------
    def _metric_inputs(self, preds: list[Target], targets: list[Target]) -> tuple[list, list]:
        p_out, t_out = [], []
        for p, t in zip(preds, targets, strict=True):
            p_out.append({"boxes": p["boxes"], "scores": p["scores"], "labels": p["labels"]})
            t_out.append(
                {
                    "boxes": t["boxes"],
                    "labels": t["labels"],
                    "iscrowd": t.get("iscrowd", torch.zeros_like(t["labels"])),
                }
            )
            if "segm" in self.iou_types:
                p_out[-1]["masks"] = p["masks"][:, 0] >= self.mask_threshold
                t_out[-1]["masks"] = t["masks"].bool()
        return p_out, t_out

    def measure(self, batch: tuple[list, list], *metrics: Any) -> None:
        """Detectors give no loss in eval mode: None."""
        images, targets = batch
        preds, tgts = self._metric_inputs(self(images), targets)
        for metric in metrics:
            metric.update(preds, tgts)
        return None

    def validation_metric(self) -> MeanAveragePrecision:
        return self.val_map

    def metric_values(self, computed: dict[str, Any]) -> dict[str, float]:
        """The scalar COCO numbers (``map``, ``map_50``, ...; per-class lists left out)."""
        return {
            k: float(v)
            for k, v in computed.items()
            if v.numel() == 1 and not k.endswith("classes") and "per_class" not in k
        }

    def validation_step(self, batch: tuple[list, list], batch_idx: int) -> None:
        self.measure(batch, self.val_map)

    def on_validation_epoch_end(self) -> None:
        values = self.metric_values(self.val_map.compute())
        self.val_map.reset()
        logged = {f"val/{k}": torch.tensor(v, dtype=torch.float32) for k, v in values.items()}
        # equal on every rank (compute() gathers them): the mean over ranks is the value itself,
        # and Lightning stops advising sync_dist once per metric and epoch
        self.log_dict(logged, prog_bar=False, sync_dist=True)

    # -- test (exported detections evaluated by visionkit.evaluation.coco_evaluator) ----------
    def on_test_epoch_start(self) -> None:
        out = self.trainer.default_root_dir
        evaluator = CocoEvaluator(self.label_map, self.iou_types, self.metric_backend, self.mask_threshold, out)  # fmt: skip
        self.evaluator = evaluator.for_datamodule(self.trainer.datamodule, "test")

    def test_step(self, batch: tuple[list, list], batch_idx: int) -> None:
        images, targets = batch
        self.evaluator.process(images, self(images), targets)

    def on_test_epoch_end(self) -> None:
        summary = self.test_summary = self.evaluator.evaluate()
        metrics = {f"test/{k}": v for k, v in summary.get("metrics", {}).items()}
        self.log_dict({k: torch.tensor(v, dtype=torch.float64) for k, v in metrics.items()}, sync_dist=True)  # as validation's  # fmt: skip

    def extra_results(self, stage: str) -> dict[str, Any]:
        """Test: paths of detections.json and the ground truth, number of images evaluated."""
        if stage != "test" or not self.test_summary:
            return super().extra_results(stage)
        s = self.test_summary
        return {
            "test/detections": s["detections"],
            "test/ground_truth": s["ground_truth"],
            "test/evaluated_images": s["evaluated_images"],
            "test/evaluated_all_images": s["all_images"],
            "test/coco_backend": self.metric_backend,
        }

    def error_analysis(self, output_dir: str, iou: float = 0.5, score: float = 0.5) -> tuple[dict[str, Any], list[str]]:  # fmt: skip
        """After test: per-class AP, PR curves and the confusion matrix with background
        (:mod:`visionkit.evaluation.error_analysis`) of the exported detections."""
        from visionkit.evaluation.error_analysis import analyse_detections

        s = self.test_summary
        if not s:
            return {}, []
        found = analyse_detections(
            s["ground_truth"],
            json.loads(Path(s["detections"]).read_text()),
            self.class_names,
            output_dir,
            self.iou_types,
            image_ids=None if s["all_images"] else s["image_ids"],
            iou=iou,
            score=score,
        )
        results = {"test/per_class_ap": found["per_class_ap"], "test/confusion": found["confusion"]}  # fmt: skip
        return results, found["figures"]

    # -- prediction ----------------------------------------------------------------------------
    def run_batch(self, images: list[torch.Tensor]) -> list[Target]:
        """Detections per image (boxes in the input's pixels, labels 0..K-1, scores[, masks])."""
        return [{k: v.cpu() for k, v in p.items()} for p in self([im.to(self.device) for im in images])]  # fmt: skip

    def export_module(self) -> torch.nn.Module:
        """image [3,h,w] + original size -> boxes, labels, scores[, masks] with the
        post-processing, without Lightning (visionkit.export)."""
        from visionkit.export import DetectorModel

        return DetectorModel(self.backbone, self.neck, self.head, masks="segm" in self.iou_types)

    def decode_options(self) -> dict[str, Any]:
        return {"score_thresh": float(self.overlay_score_thresh), "mask_threshold": float(self.mask_threshold)}  # fmt: skip

    @classmethod
    def decode(cls, outputs: list[Target], sizes: list[tuple[int, int]], label_map: LabelMap, options: Mapping[str, Any], input_sizes: list[tuple[int, int]] | None = None) -> list[Detections]:  # fmt: skip
        """Detections in the model input's pixels (``input_sizes``, default: each mask's size or the
        original) -> the original image's pixels; masks as probabilities [M,H,W]."""
        results = []
        for i, (pred, size) in enumerate(zip(outputs, sizes, strict=True)):
            pred = {k: torch.as_tensor(v) for k, v in pred.items()}
            given = input_sizes[i] if input_sizes is not None else pred.pop("input_size", None)
            if given is not None:
                pred = to_original_size(pred, tuple(int(v) for v in given), tuple(size))
            masks = pred.get("masks")
            if masks is not None:
                masks = masks.float().reshape(len(pred["boxes"]), *masks.shape[-2:])
            results.append(
                Detections(
                    pred["boxes"].float(), pred["labels"].long(), pred["scores"].float(), label_map,
                    tuple(size), masks, float(options.get("score_thresh", 0.5)),
                    float(options.get("mask_threshold", 0.5)),
                )
            )  # fmt: skip
        return results

    def predict_step(self, batch: Mapping[str, Any], batch_idx: int = 0) -> list[Detections]:
        """Like every task's, with the input sizes (eval transforms may resize) undone."""
        images = list(batch["images"])
        outputs = self.predict_outputs(images)
        input_sizes = [tuple(im.shape[-2:]) for im in images]
        return self.decode(outputs, list(batch["sizes"]), self.label_map, self.decode_options(), input_sizes)  # fmt: skip

    def draw(self, image_u8: torch.Tensor, pred: Target) -> torch.Tensor:
        """Detections with score >= overlay_score_thresh drawn on a uint8 image."""
        from visionkit.overlays import draw_detections

        keep = pred["scores"] >= self.overlay_score_thresh
        masks = pred["masks"][keep] if "masks" in pred else None
        return draw_detections(image_u8, pred["boxes"][keep], pred["labels"][keep], pred["scores"][keep], self.class_names, masks)  # fmt: skip

    def overlays(self, batch: Any, max_images: int, mean: Sequence[float], std: Sequence[float]) -> list[torch.Tensor]:  # fmt: skip
        """Predictions drawn on the first ``max_images`` images of a batch (images are 0..1)."""
        from visionkit.overlays import to_uint8

        images = list(batch[0][:max_images])
        with torch.no_grad():
            preds = self(images)
        return [self.draw(to_uint8(img), p) for img, p in zip(images, preds, strict=True)]
