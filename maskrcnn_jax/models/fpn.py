"""Feature Pyramid Network over C2..C5 with torchvision's extra max-pool level P6.

Legend: B batch, C channels. Feature maps are NHWC.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from maskrcnn_jax.models.conv import Conv
from maskrcnn_jax.models.norm import BatchNorm

# torchvision initialises FPN convs with kaiming_uniform(a=1) and zero bias.
fpn_init = nn.initializers.variance_scaling(1.0, "fan_in", "uniform")


def upsample_nearest(x: jax.Array, height: int, width: int) -> jax.Array:
    """torch F.interpolate(mode='nearest', size=...): source index floor(dst * in / out).

    x: [B, h, w, C] -> [B, height, width, C].
    An integer factor (every FPN level of a canvas divisible by 32) is a broadcast, whose gradient is
    a sum: an index gather's is a scatter-add, 0.4 GB per image per step on a TPU (issue 28).
    """
    batch, h, w, channels = x.shape
    if height % h == 0 and width % w == 0:
        factor_h, factor_w = height // h, width // w
        tiled = jnp.broadcast_to(x[:, :, None, :, None, :], (batch, h, factor_h, w, factor_w, channels))
        return tiled.reshape(batch, height, width, channels)
    rows = np.floor(np.arange(height) * (x.shape[1] / height)).astype(np.int32)
    cols = np.floor(np.arange(width) * (x.shape[2] / width)).astype(np.int32)
    return x[:, rows][:, :, cols]


class FPN(nn.Module):
    """Top-down pathway with lateral 1x1 convs ("inner_i") and 3x3 output convs ("layer_i").

    features: [C2, C3, C4, C5], each [B, H_l, W_l, C_l] ->
    [P2, P3, P4, P5, P6], each [B, H_l, W_l, channels] in `dtype`; P6 = P5[:, ::2, ::2] (max-pool,
    kernel 1, stride 2). dtype, fast_convs: as models.conv.Conv's dtype and fast.
    norm (Mask R-CNN v2): each conv without bias, followed by BatchNorm ("inner_bn_i", "layer_bn_i",
    eps `bn_eps`; `train` as BatchNorm's, over every position, padding included as in torchvision).
    """

    channels: int = 256
    dtype: Any = jnp.float32
    fast_convs: bool = True
    norm: bool = False
    bn_eps: float = 1e-5

    @nn.compact
    def __call__(self, features: Sequence[jax.Array], train: bool = False) -> list[jax.Array]:
        def block(kind: str, kernel_size: int, index: int, x: jax.Array) -> jax.Array:
            x = Conv(self.channels, kernel_size, use_bias=not self.norm, kernel_init=fpn_init, dtype=self.dtype,
                     fast=self.fast_convs, name=f"{kind}_{index}")(x)
            if self.norm:
                x = BatchNorm(self.bn_eps, name=f"{kind}_bn_{index}")(x, train)
            return x

        last = len(features) - 1
        top_down = block("inner", 1, last, features[last])
        outputs = [block("layer", 3, last, top_down)]
        for index in range(last - 1, -1, -1):
            lateral = block("inner", 1, index, features[index])
            top_down = lateral + upsample_nearest(top_down, lateral.shape[1], lateral.shape[2])
            outputs.insert(0, block("layer", 3, index, top_down))
        outputs.append(outputs[-1][:, ::2, ::2])
        return outputs

