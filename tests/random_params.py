"""Seeded random parameters for a model, without compiling its init (slow on 2 cores)."""

import jax
import numpy as np

from maskrcnn_jax.models import init_params


def random_params(model, seed: int = 0) -> dict:
    """Parameters of the model's shapes: He-scaled kernels, zero biases, identity FrozenBatchNorm statistics."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(lambda: init_params(model, jax.random.key(0)))

    def fill(path, leaf):
        name = path[-1].key
        if name in ("scale", "var"):
            return np.ones(leaf.shape, np.float32)
        if name == "kernel":
            return (rng.normal(size=leaf.shape) * np.sqrt(2.0 / np.prod(leaf.shape[:-1]))).astype(np.float32)
        return np.zeros(leaf.shape, np.float32)

    return jax.tree_util.tree_map_with_path(fill, shapes)
