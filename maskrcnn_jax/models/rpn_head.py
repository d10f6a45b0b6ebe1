"""Region proposal network head, shared across pyramid levels.

Legend: B batch, A anchors per location, C channels. Feature maps are NHWC.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from maskrcnn_jax.models.conv import Conv

# torchvision initialises the RPN head with normal(std=0.01) weights and zero bias.
rpn_init = nn.initializers.normal(0.01)


class RPNHead(nn.Module):
    """`num_convs` 3x3 conv + ReLU layers (1 in Mask R-CNN v1, 2 in v2; named "conv", "conv_1", ...
    as torchvision's conv.0, conv.1, ...), then per-anchor objectness logits and box deltas.

    features: list of [B, H_l, W_l, C] -> (objectness: list of [B, H_l, W_l, A],
    box_deltas: list of [B, H_l, W_l, A * 4]); channel a * 4 + k is coordinate k of anchor a,
    so reshaping to [B, H_l * W_l * A, 4] gives torchvision's anchor order (row, column, anchor).
    Computes in `dtype`; both outputs are float32 (the losses reduce them in float32).
    """

    num_anchors: int = 3
    dtype: Any = jnp.float32
    fast_convs: bool = True
    num_convs: int = 1

    @nn.compact
    def __call__(self, features: Sequence[jax.Array]) -> tuple[list[jax.Array], list[jax.Array]]:
        options = dict(kernel_init=rpn_init, dtype=self.dtype, fast=self.fast_convs)
        channels = features[0].shape[-1]
        shared = [Conv(channels, 3, **options, name="conv" if index == 0 else f"conv_{index}")
                  for index in range(self.num_convs)]
        objectness_conv = Conv(self.num_anchors, 1, **options, name="cls_logits")
        deltas_conv = Conv(4 * self.num_anchors, 1, **options, name="bbox_pred")
        objectness, box_deltas = [], []
        for feature in features:
            hidden = feature
            for conv in shared:
                hidden = nn.relu(conv(hidden))
            objectness.append(objectness_conv(hidden).astype(jnp.float32))
            box_deltas.append(deltas_conv(hidden).astype(jnp.float32))
        return objectness, box_deltas
