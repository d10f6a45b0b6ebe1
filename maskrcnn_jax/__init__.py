"""Mask R-CNN in JAX and Flax: pure fixed-shape ops, Flax Linen models, host data pipeline.

`maskrcnn_jax.Detector` (from `maskrcnn_jax.inference.detector`) detects objects in photos from a checkpoint.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    # Imported on first use: `import maskrcnn_jax.data` (e.g. in grain worker processes) must not
    # pull in Flax, Orbax and the model.
    if name == "Detector":
        from maskrcnn_jax.inference.detector import Detector

        return Detector
    raise AttributeError(f"module 'maskrcnn_jax' has no attribute {name!r}")
