"""Feature Pyramid Network over C2..C5 with torchvision's extra max-pool level P6.

Legend: B batch, C channels. Feature maps are NHWC.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from maskrcnn_jax.models.conv import Conv

# torchvision initialises FPN convs with kaiming_uniform(a=1) and zero bias.
fpn_init = nn.initializers.variance_scaling(1.0, "fan_in", "uniform")


def upsample_nearest(x: jax.Array, height: int, width: int) -> jax.Array:
    """torch F.interpolate(mode='nearest', size=...): source index floor(dst * in / out).

    x: [B, h, w, C] -> [B, height, width, C].
    """
    rows = np.floor(np.arange(height) * (x.shape[1] / height)).astype(np.int32)
    cols = np.floor(np.arange(width) * (x.shape[2] / width)).astype(np.int32)
    return x[:, rows][:, :, cols]


class FPN(nn.Module):
    """Top-down pathway with lateral 1x1 convs ("inner_i") and 3x3 output convs ("layer_i").

    features: [C2, C3, C4, C5], each [B, H_l, W_l, C_l] ->
    [P2, P3, P4, P5, P6], each [B, H_l, W_l, channels] in `dtype`; P6 = P5[:, ::2, ::2] (max-pool,
    kernel 1, stride 2). dtype, fast_convs: as models.conv.Conv's dtype and fast.
    """

    channels: int = 256
    dtype: Any = jnp.float32
    fast_convs: bool = True

    @nn.compact
    def __call__(self, features: Sequence[jax.Array]) -> list[jax.Array]:
        def inner(index: int) -> Conv:
            return Conv(self.channels, 1, kernel_init=fpn_init, dtype=self.dtype, fast=self.fast_convs, name=f"inner_{index}")

        def layer(index: int) -> Conv:
            return Conv(self.channels, 3, kernel_init=fpn_init, dtype=self.dtype, fast=self.fast_convs, name=f"layer_{index}")

        last = len(features) - 1
        top_down = inner(last)(features[last])
        outputs = [layer(last)(top_down)]
        for index in range(last - 1, -1, -1):
            lateral = inner(index)(features[index])
            top_down = lateral + upsample_nearest(top_down, lateral.shape[1], lateral.shape[2])
            outputs.insert(0, layer(index)(top_down))
        outputs.append(outputs[-1][:, ::2, ::2])
        return outputs

