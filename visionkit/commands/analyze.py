"""``python -m visionkit analyze [OVERRIDES]``: per-layer table of the configured backbone.

Prints name, type, output shape, jump, receptive field, params and MACs for every leaf layer of
``model.backbone`` on an ``input_size`` input, and writes ``analysis.json`` and ``analysis.csv`` into
the run directory. Example: ``python -m visionkit analyze model/backbone=vgg input_size=[3,32,32]``.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf


def run(cfg: DictConfig) -> dict[str, Any]:
    """Build the backbone, summarise it, print the table and write the reports; returns totals."""
    from visionkit.analysis import format_table, summarize, write_reports
    from visionkit.errors import ConfigError
    from visionkit.plugins import load_configured
    from visionkit.registries import BACKBONES

    load_configured(cfg)
    if "model" not in cfg or cfg.model.get("backbone") is None:
        raise ConfigError("analyze needs model.backbone (e.g. model/backbone=vgg)")
    input_size = cfg.get("input_size")
    if input_size is None:
        raise ConfigError("analyze needs input_size: [C, H, W], e.g. input_size=[3,64,64]")
    spec = OmegaConf.to_container(cfg.model.backbone, resolve=True)
    spec.pop("pretrained", None)  # the architecture is analysed; weights do not change it
    backbone = BACKBONES.build(spec)
    rows = summarize(backbone, list(input_size))
    print(format_table(rows))
    meta = {"backbone": spec, "input_size": list(input_size)}
    json_path, csv_path = write_reports(rows, cfg.paths.output_dir, meta)
    print(f"analysis: {json_path} {csv_path}")
    return {"total_params": sum(r.params for r in rows), "total_macs": sum(r.macs for r in rows)}
