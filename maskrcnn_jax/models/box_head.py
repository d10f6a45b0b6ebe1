"""Box branch of the RoI heads: TwoMLPHead (v1) or ConvFCHead (v2), and the class / box-delta predictor.

Legend: R RoIs, S RoI output size (7), C channels, K classes including background.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from maskrcnn_jax.models.conv import Conv
from maskrcnn_jax.models.norm import BatchNorm

# torchvision initialises FastRCNNConvFCHead's convs with kaiming_normal(fan_out, relu).
conv_fc_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


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


class ConvFCHead(nn.Module):
    """torchvision's FastRCNNConvFCHead with BatchNorm (Mask R-CNN v2): `num_convs` x (3x3 conv
    without bias "conv{i}" -> BatchNorm "bn{i}" -> ReLU), flatten (row, column, channel order),
    "fc" -> ReLU.

    roi_features: [..., S, S, C] -> [..., representation_size] in `dtype` (parameters stay float32).
    valid: bool [...] (None: all), True for real RoIs: train=True takes the BatchNorm statistics over
    those only.
    """

    channels: int = 256
    num_convs: int = 4
    representation_size: int = 1024
    bn_eps: float = 1e-5
    dtype: Any = jnp.float32
    fast_convs: bool = True

    @nn.compact
    def __call__(self, roi_features: jax.Array, valid: jax.Array | None = None, train: bool = False) -> jax.Array:
        batch_shape = roi_features.shape[:-3]
        x = roi_features.reshape((-1,) + roi_features.shape[-3:])
        rows = None if valid is None else valid.reshape(-1, 1, 1)
        for index in range(1, self.num_convs + 1):
            x = Conv(self.channels, 3, use_bias=False, kernel_init=conv_fc_init, dtype=self.dtype,
                     fast=self.fast_convs, name=f"conv{index}")(x)
            x = nn.relu(BatchNorm(self.bn_eps, name=f"bn{index}")(x, train, rows))
        x = x.reshape(batch_shape + (-1,))
        return nn.relu(nn.Dense(self.representation_size, dtype=self.dtype, name="fc")(x))


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
