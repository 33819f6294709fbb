"""Frozen backbones and what they compute once: the net registry, trunks and window rules,
the patch feature cache and the dense cache. Imports `core` and `data`."""
