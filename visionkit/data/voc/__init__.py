"""``voc`` format: the datamodule (``datamodule``) and the Pascal VOC XML reader (``reader``)."""
