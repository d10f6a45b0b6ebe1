"""Mask R-CNN in JAX and Flax: pure fixed-shape ops, Flax Linen models, host data pipeline."""

__version__ = "0.1.0"
