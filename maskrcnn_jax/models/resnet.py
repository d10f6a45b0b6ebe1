"""ResNet backbone (torchvision v1.5 layout: stride on the 3x3 conv) with frozen or trained BatchNorm.

Legend: B batch, H W image, C channels. Feature maps are NHWC.

norm "frozen" (Mask R-CNN v1): FrozenBatchNorm, whose statistics live in the `params` tree as four
leaves per norm layer (`scale`, `bias`, `mean`, `var`), exactly torchvision's FrozenBatchNorm2d
buffers. They are constants: the module stops their gradient, and `models.frozen_parameter_mask`
marks them (and the frozen stem/early stages) so a trainer's optimizer leaves them alone.
norm "batch" (Mask R-CNN v2, torchvision's nn.BatchNorm2d): models.norm.BatchNorm, same leaves;
`train` selects batch statistics.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from maskrcnn_jax.models.conv import Conv
from maskrcnn_jax.models.norm import BatchNorm

NORM_KINDS = ("frozen", "batch")
# The layout below, as a backbone checkpoint records the layout of its weights (torchvision's and
# timm's `resnet50`; the original ResNet and detectron2's MSRA weights stride on the first 1x1 conv).
ARCHITECTURE = "resnet_v1.5"

# He (fan_out) init as torchvision's ResNet; only used when training from scratch.
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def conv(features: int, kernel: int, stride: int = 1, dtype: Any = jnp.float32, fast: bool = True,
         name: str | None = None) -> Conv:
    """A torch-style bias-free conv: symmetric padding kernel // 2 (so stride 2 matches torch exactly)."""
    return Conv(features, kernel, stride, use_bias=False, kernel_init=conv_init, dtype=dtype, fast=fast, name=name)


class FrozenBatchNorm(nn.Module):
    """y = (x - mean) / sqrt(var + eps) * scale + bias with fixed statistics.

    torchvision's COCO_V1 Mask R-CNN weights were trained with eps = 0.0; a torchvision model built
    with weights=None uses 1e-5. x: [..., C] -> [..., C] in x's dtype.

    The math is float32 whatever x's dtype: with eps = 0 a small variance makes the folded scale
    large, and a bfloat16 scale and bias would add two roundings to the one of the output. The
    multiply-add is elementwise and fuses with the convolution before it, so the cost is nil.
    """

    eps: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False, valid: jax.Array | None = None) -> jax.Array:
        """train and valid are those of BatchNorm, accepted so that either norm fits the same call;
        frozen statistics ignore them."""
        channels = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (channels,))
        bias = self.param("bias", nn.initializers.zeros, (channels,))
        mean = self.param("mean", nn.initializers.zeros, (channels,))
        var = self.param("var", nn.initializers.ones, (channels,))
        scale, bias, mean, var = jax.lax.stop_gradient((scale, bias, mean, var))
        # Fold into one multiply-add, in the same order as torchvision's FrozenBatchNorm2d.
        folded_scale = scale * jax.lax.rsqrt(var + self.eps)
        folded_bias = bias - mean * folded_scale
        return (x.astype(jnp.float32) * folded_scale + folded_bias).astype(x.dtype)


def norm_layer(kind: str, eps: float, name: str) -> FrozenBatchNorm | BatchNorm:
    """The backbone's norm layer: kind "frozen" (FrozenBatchNorm) or "batch" (BatchNorm); both are
    called as norm(x, train)."""
    if kind not in NORM_KINDS:
        raise ValueError(f"unknown norm {kind!r}; expected one of {NORM_KINDS}")
    return FrozenBatchNorm(eps, name=name) if kind == "frozen" else BatchNorm(eps, name=name)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride) -> 1x1 (x4 channels) with a projection shortcut when shapes change.

    x: [B, H, W, C_in] -> [B, H/stride, W/stride, 4 * width]. norm: "frozen" or "batch" (norm_layer).
    """

    width: int
    stride: int = 1
    bn_eps: float = 1e-5
    dtype: Any = jnp.float32
    fast_convs: bool = True
    norm: str = "frozen"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        out_channels = 4 * self.width
        options = dict(dtype=self.dtype, fast=self.fast_convs)

        def norm(name: str, y: jax.Array) -> jax.Array:
            return norm_layer(self.norm, self.bn_eps, name)(y, train)

        y = nn.relu(norm("bn1", conv(self.width, 1, **options, name="conv1")(x)))
        y = nn.relu(norm("bn2", conv(self.width, 3, self.stride, **options, name="conv2")(y)))
        y = norm("bn3", conv(out_channels, 1, **options, name="conv3")(y))
        if self.stride != 1 or x.shape[-1] != out_channels:
            x = norm("downsample_bn", conv(out_channels, 1, self.stride, **options, name="downsample_conv")(x))
        return nn.relu(x + y)


class ResNetStage(nn.Module):
    """`num_blocks` bottlenecks named "0", "1", ... (torchvision's layerN.i); the first one strides."""

    num_blocks: int
    width: int
    stride: int
    bn_eps: float = 1e-5
    dtype: Any = jnp.float32
    fast_convs: bool = True
    norm: str = "frozen"
    remat: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        # remat: each block's activations are recomputed in the backward pass, only its output is kept.
        block = nn.remat(Bottleneck, static_argnums=(2,)) if self.remat else Bottleneck
        for index in range(self.num_blocks):
            stride = self.stride if index == 0 else 1
            x = block(self.width, stride, self.bn_eps, self.dtype, self.fast_convs, self.norm, name=str(index))(x, train)
        return x


class ResNet(nn.Module):
    """Bottleneck ResNet returning C2..C5 (outputs of layer1..layer4, strides 4, 8, 16, 32).

    stage_sizes (3, 4, 6, 3) is ResNet-50, (3, 4, 23, 3) ResNet-101; a small `stem_width`
    (e.g. 8) with (1, 1, 1, 1) gives a tiny network for tests and CPU demos.
    Convolutions compute in `dtype` (parameters stay float32); fast_convs: models.conv's faster
    CPU formulations (False: lax.conv_general_dilated everywhere, the reference).
    norm: "frozen" (v1) or "batch" (v2; `train` then normalises with batch statistics, padding included
    as in torchvision).
    images: [B, H, W, 3] -> list of 4 maps [B, H/s, W/s, 4 * stem_width * 2**i] in `dtype`, s = 4, 8, 16, 32.
    """

    stage_sizes: Sequence[int] = (3, 4, 6, 3)
    stem_width: int = 64
    bn_eps: float = 1e-5
    dtype: Any = jnp.float32
    fast_convs: bool = True
    norm: str = "frozen"
    remat: bool = False

    @nn.compact
    def __call__(self, images: jax.Array, train: bool = False) -> list[jax.Array]:
        x = conv(self.stem_width, 7, 2, dtype=self.dtype, fast=self.fast_convs, name="conv1")(images)
        x = nn.relu(norm_layer(self.norm, self.bn_eps, "bn1")(x, train))
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        outputs = []
        for index, num_blocks in enumerate(self.stage_sizes):
            x = ResNetStage(
                num_blocks,
                self.stem_width * 2**index,
                stride=1 if index == 0 else 2,
                bn_eps=self.bn_eps,
                dtype=self.dtype,
                fast_convs=self.fast_convs,
                norm=self.norm,
                remat=self.remat,
                name=f"layer{index + 1}",
            )(x, train)
            outputs.append(x)
        return outputs


def bottleneck_resnet_depth(stage_sizes: Sequence[int]) -> int:
    """The depth a bottleneck ResNet is named by: the stem conv, 3 convs per block and the classifier
    ((3, 4, 6, 3) -> 50, (3, 4, 23, 3) -> 101)."""
    return 3 * sum(stage_sizes) + 2


def resnet_stage_sizes(depth: int) -> tuple[int, ...]:
    """Blocks per stage for the ResNet depths Mask R-CNN uses."""
    sizes = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
    if depth not in sizes:
        raise ValueError(f"unsupported ResNet depth {depth}; expected one of {sorted(sizes)}")
    return sizes[depth]

