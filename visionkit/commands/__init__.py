"""One module per CLI command; each exposes ``run(cfg)`` (Hydra) or ``main(argv)`` (plain)."""
