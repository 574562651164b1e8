"""``yolo`` format: the datamodule (``datamodule``) and the YOLO txt label reader (``reader``)."""
