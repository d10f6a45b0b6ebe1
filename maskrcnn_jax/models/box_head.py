"""Box branch of the RoI heads: TwoMLPHead and the class / box-delta predictor.

Legend: R RoIs, S RoI output size (7), C channels, K classes including background.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


class TwoMLPHead(nn.Module):
    """Flatten (row, column, channel order) -> fc6 -> ReLU -> fc7 -> ReLU.

    roi_features: [..., S, S, C] -> [..., representation_size] in `dtype` (parameters stay float32).
    """

    representation_size: int = 1024
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, roi_features: jax.Array) -> jax.Array:
        x = roi_features.reshape(roi_features.shape[:-3] + (-1,))
        x = nn.relu(nn.Dense(self.representation_size, dtype=self.dtype, name="fc6")(x))
        return nn.relu(nn.Dense(self.representation_size, dtype=self.dtype, name="fc7")(x))


class BoxPredictor(nn.Module):
    """Class logits and per-class box deltas (torchvision FastRCNNPredictor).

    x: [..., representation_size] -> (class_logits [..., K], box_deltas [..., K, 4]), both float32
    whatever the compute `dtype` (the losses reduce them in float32).
    """

    num_classes: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        class_logits = nn.Dense(self.num_classes, kernel_init=nn.initializers.normal(0.01), dtype=self.dtype,
                                name="cls_score")(x)
        box_deltas = nn.Dense(4 * self.num_classes, kernel_init=nn.initializers.normal(0.001), dtype=self.dtype,
                              name="bbox_pred")(x)
        box_deltas = box_deltas.reshape(box_deltas.shape[:-1] + (self.num_classes, 4))
        return class_logits.astype(jnp.float32), box_deltas.astype(jnp.float32)
