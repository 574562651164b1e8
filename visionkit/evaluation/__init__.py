"""Evaluation: COCO result export and COCO mAP with a selectable backend."""
