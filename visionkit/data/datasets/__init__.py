"""Readers and generators behind the datamodules (no Lightning here)."""
