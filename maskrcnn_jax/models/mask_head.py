"""Mask branch of the RoI heads: four 3x3 convs, then a 2x deconvolution and per-class logits.

Legend: R RoIs, S RoI output size (14), C channels, K classes including background.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from maskrcnn_jax.models.conv import Conv, ConvTranspose
from maskrcnn_jax.models.norm import BatchNorm

# torchvision initialises the mask branch with kaiming_normal(fan_out, relu) and zero bias.
mask_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class MaskHead(nn.Module):
    """Four 3x3 conv + ReLU layers ("mask_fcn1".."mask_fcn4").

    norm (Mask R-CNN v2): each conv without bias, followed by BatchNorm ("mask_bn1".., eps `bn_eps`).
    roi_features: [R, S, S, C] -> [R, S, S, channels] in `dtype` (parameters stay float32).
    valid: bool [R] (None: all), True for real RoIs: train=True takes the BatchNorm statistics over
    those only.
    """

    channels: int = 256
    num_convs: int = 4
    dtype: Any = jnp.float32
    fast_convs: bool = True
    norm: bool = False
    bn_eps: float = 1e-5

    @nn.compact
    def __call__(self, roi_features: jax.Array, valid: jax.Array | None = None, train: bool = False) -> jax.Array:
        x = roi_features
        rows = None if valid is None else valid.reshape(-1, 1, 1)
        for index in range(1, self.num_convs + 1):
            x = Conv(self.channels, 3, use_bias=not self.norm, kernel_init=mask_init, dtype=self.dtype,
                     fast=self.fast_convs, name=f"mask_fcn{index}")(x)
            if self.norm:
                x = BatchNorm(self.bn_eps, name=f"mask_bn{index}")(x, train, rows)
            x = nn.relu(x)
        return x


class MaskPredictor(nn.Module):
    """2x2 stride-2 transposed conv + ReLU ("conv5_mask"), then 1x1 conv to per-class logits.

    x: [R, S, S, C] -> mask_logits [R, 2S, 2S, K], float32 whatever the compute `dtype` (the loss
    reduces them in float32); with classes int [R], the logits of each row's class only, [R, 2S, 2S]
    (the training loss needs no other: K times less output, which was the step's largest buffer).
    """

    num_classes: int
    dtype: Any = jnp.float32
    fast_convs: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, classes: jax.Array | None = None) -> jax.Array:
        options = dict(kernel_init=mask_init, dtype=self.dtype, fast=self.fast_convs)
        x = nn.relu(ConvTranspose(x.shape[-1], 2, **options, name="conv5_mask")(x))
        return Conv(self.num_classes, 1, **options, name="mask_fcn_logits")(x, classes).astype(jnp.float32)
