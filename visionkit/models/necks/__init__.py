"""NECKS: feature transforms between backbone and head (e.g. FPN)."""
