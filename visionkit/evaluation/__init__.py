"""Evaluation: COCO results export and COCOeval (coco_results), the detection test evaluator
(coco_evaluator), and error analysis (per-class AP, confusion matrices, PR curves)."""
