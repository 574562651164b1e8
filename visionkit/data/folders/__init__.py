"""Folder formats: ``imagefolder`` (classification, one folder per class) and ``masks`` (semantic segmentation, image and mask PNG folders); ``reader`` lists and reads their files."""
