"""``coco`` format: the datamodule (``datamodule``) and the annotation reader and validator (``reader``)."""
