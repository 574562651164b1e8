"""Data: one folder per format holding its datamodule and reader (``coco/``, ``voc/``, ``yolo/``,
``shapes/``, ``folders/``; ``digits.py``), on the shared ``datamodule.VisionDataModule``; transforms
(TRANSFORMS), label encoding, validation, samplers.

Everything is registered lazily (``"module:attr"``), so importing this package (and ``visionkit
list``) imports neither torch nor pytorch_lightning.
"""

from visionkit.registries import DATASETS, TRANSFORMS

DATASETS.register("visionkit.data.shapes.datamodule:ShapesDataModule", name="shapes")
DATASETS.register("visionkit.data.coco.datamodule:CocoDataModule", name="coco")
DATASETS.register("visionkit.data.folders.imagefolder:ImageFolderDataModule", name="imagefolder")
DATASETS.register("visionkit.data.folders.masks:MasksDataModule", name="masks")
DATASETS.register("visionkit.data.digits:DigitsDataModule", name="digits")
DATASETS.register("visionkit.data.voc.datamodule:VocDataModule", name="voc")
DATASETS.register("visionkit.data.yolo.datamodule:YoloDataModule", name="yolo")

_V2 = "torchvision.transforms.v2"
_OURS = "visionkit.data.transforms"
for _name, _target in {
    "hflip": f"{_V2}:RandomHorizontalFlip",
    "vflip": f"{_V2}:RandomVerticalFlip",
    "random_resized_crop": f"{_V2}:RandomResizedCrop",
    "random_crop": f"{_V2}:RandomCrop",
    "center_crop": f"{_V2}:CenterCrop",
    "resize": f"{_V2}:Resize",
    "rotation": f"{_V2}:RandomRotation",
    "affine": f"{_V2}:RandomAffine",
    "color_jitter": f"{_V2}:ColorJitter",
    "photometric": f"{_V2}:RandomPhotometricDistort",
    "grayscale": f"{_V2}:RandomGrayscale",
    "scale_jitter": f"{_V2}:ScaleJitter",
    "random_short_side_scale": f"{_V2}:RandomShortestSize",
    "random_zoom_out": f"{_V2}:RandomZoomOut",
    "random_iou_crop": f"{_V2}:RandomIoUCrop",
    "pad": f"{_V2}:Pad",
    "gaussian_blur": f"{_V2}:GaussianBlur",
    "resize_pad": f"{_OURS}:ResizePad",
    "normalize": f"{_OURS}:Normalize",
    "to_float": f"{_OURS}:ToFloat",
    "sanitize": f"{_OURS}:Sanitize",
    # multi-image: they draw other training samples (visionkit.data.mix_transforms)
    "mosaic": "visionkit.data.mix_transforms:Mosaic",
    "copy_paste": "visionkit.data.mix_transforms:CopyPaste",
}.items():
    TRANSFORMS.register(_target, name=_name)
del _name, _target
