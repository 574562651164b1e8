"""NECKS: feature transforms between backbone and head; ``fpn`` is lazy (it imports torchvision)."""

from visionkit.registries import NECKS

NECKS.register("visionkit.models.necks.fpn:FPN", name="fpn")
NECKS.register("visionkit.models.necks.tv_fpn:TorchvisionFPN", name="tv_fpn")
NECKS.register("visionkit.models.necks.pafpn:PAFPN", name="pafpn")
