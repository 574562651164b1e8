"""``shapes``: generated COCO data (``generator`` draws and writes it), read by the COCO datamodule (``datamodule``)."""
