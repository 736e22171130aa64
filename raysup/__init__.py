"""raysup: cross-modal self-supervised learning from video on Ray."""

__version__ = "0.1.0"
