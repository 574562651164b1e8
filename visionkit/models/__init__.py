"""Models: backbones, necks and heads; importing this package registers them all."""

from visionkit.models import backbones, heads, necks  # noqa: F401
