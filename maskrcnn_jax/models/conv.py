"""Convolutions with a plain path (`lax.conv_general_dilated`) and faster XLA:CPU formulations.

Legend: B batch, H W input map, Ho Wo output map, k kernel side, s stride, Ci Co channels.
Feature maps are NHWC, kernels HWIO [k, k, Ci, Co] (Flax's layout), padding symmetric.

XLA:CPU runs 1x1 convolutions slower than the same contraction as a matmul, computes convolution
weight gradients far below its matmul speed, and a transposed convolution's backward slowest of
all. So on CPU (`lax.platform_dependent`; other platforms keep the convolutions their libraries
tune) the model runs:
- 1x1 convolutions as a [B Ho Wo, Ci] @ [Ci, Co] matmul (strided ones slice first); autodiff makes
  both gradients matmuls too;
- kxk convolutions large enough (`uses_tap_weight_grad`) with a custom VJP whose weight gradient
  is a sum of shifted matmuls, one per kernel tap; their forward and input gradient stay XLA's;
- the mask head's 2x2 stride-2 transposed convolution as one matmul and a reshape.
Measured side by side with benchmarks/benchmark_convs.py (docs/benchmarks.md); each formulation
equals the plain one, values and gradients (tests/test_model_fast_conv.py).
"""

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")
# Measured (docs/benchmarks.md): the tap-sum weight gradient beat XLA's for every kxk convolution of
# a 512x512 batch-2 step, 3x3x64 and the 7x7 stem included, except 3x3x256 on the 16x16 and 8x8
# maps (512 and 128 rows, 2^25 and 2^23 multiply-adds per tap), where XLA's was as fast or faster.
TAP_WEIGHT_GRAD_MIN_ROWS = 2**14
TAP_WEIGHT_GRAD_MIN_MULTIPLY_ADDS = 2**27


def conv_plain(x: jax.Array, kernel: jax.Array, stride: int, padding: int) -> jax.Array:
    """XLA's convolution: x [B, H, W, Ci], kernel [k, k, Ci, Co] -> [B, Ho, Wo, Co]."""
    return lax.conv_general_dilated(
        x, kernel, (stride, stride), ((padding, padding), (padding, padding)), dimension_numbers=DIMENSION_NUMBERS
    )


def conv_1x1_matmul(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    """A 1x1 convolution (no padding) as a [B Ho Wo, Ci] @ [Ci, Co] matmul: x [B, H, W, Ci],
    kernel [1, 1, Ci, Co] -> [B, Ho, Wo, Co].

    Ho = ceil(H / s): the stride keeps every s-th row and column, as the convolution samples them.
    Autodiff makes both gradients matmuls too. A 2-D matmul rather than an einsum over (b, h, w):
    XLA:CPU ran the weight gradient's three-axis contraction up to 2.6x slower.
    """
    x = x[:, ::stride, ::stride]
    batch, height, width, in_channels = x.shape
    return (x.reshape(-1, in_channels) @ kernel[0, 0]).reshape(batch, height, width, -1)


def kernel_grad_taps(x: jax.Array, output_grad: jax.Array, kernel_size: int, stride: int, padding: int) -> jax.Array:
    """Weight gradient of conv_plain as one matmul per kernel tap.

    dW[i, j] = sum over b, h, w of x_padded[b, i + s h, j + s w, :]^T dy[b, h, w, :].
    x [B, H, W, Ci], output_grad dy [B, Ho, Wo, Co] -> [k, k, Ci, Co] in x's dtype (summed in float32).
    Each tap's window is reshaped to a [B Ho Wo, Ci] matrix first: XLA:CPU ran the same contraction
    over three axes of the strided window up to 2x slower.
    """
    x_padded = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    batch, out_height, out_width, out_channels = output_grad.shape
    in_channels = x.shape[-1]
    output_grad = output_grad.reshape(-1, out_channels)
    rows = []
    for i in range(kernel_size):
        row = []
        for j in range(kernel_size):
            window = lax.slice(
                x_padded,
                (0, i, j, 0),
                (batch, i + stride * (out_height - 1) + 1, j + stride * (out_width - 1) + 1, in_channels),
                (1, stride, stride, 1),
            )
            row.append(lax.dot_general(window.reshape(-1, in_channels), output_grad, (((0,), (0,)), ((), ())),
                                       preferred_element_type=jnp.float32))
        rows.append(jnp.stack(row))
    return jnp.stack(rows).astype(x.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv_tap_weight_grad(x: jax.Array, kernel: jax.Array, stride: int, padding: int) -> jax.Array:
    """conv_plain with the weight gradient of kernel_grad_taps (input gradient: XLA's). Shapes as conv_plain."""
    return conv_plain(x, kernel, stride, padding)


def _conv_tap_weight_grad_forward(x, kernel, stride, padding):
    return conv_plain(x, kernel, stride, padding), (x, kernel)


def _conv_tap_weight_grad_backward(stride, padding, residuals, output_grad):
    x, kernel = residuals
    _, input_vjp = jax.vjp(lambda inputs: conv_plain(inputs, kernel, stride, padding), x)
    (input_grad,) = input_vjp(output_grad)
    return input_grad, kernel_grad_taps(x, output_grad, kernel.shape[0], stride, padding)


conv_tap_weight_grad.defvjp(_conv_tap_weight_grad_forward, _conv_tap_weight_grad_backward)


def uses_tap_weight_grad(kernel_size: int, in_channels: int, out_channels: int, output_pixels: int) -> bool:
    """Whether the CPU path computes a kxk convolution's weight gradient per tap: unless each tap's
    matmul ([Ci, B Ho Wo] @ [B Ho Wo, Co]) is small in both rows and multiply-adds.

    output_pixels: B Ho Wo, the rows of each tap's matmul.
    """
    many_rows = output_pixels >= TAP_WEIGHT_GRAD_MIN_ROWS
    much_work = output_pixels * in_channels * out_channels >= TAP_WEIGHT_GRAD_MIN_MULTIPLY_ADDS
    return kernel_size > 1 and (many_rows or much_work)


def conv_fast(x: jax.Array, kernel: jax.Array, stride: int, padding: int) -> jax.Array:
    """The convolution the model uses: on CPU the faster formulation for this shape, elsewhere conv_plain.

    x [B, H, W, Ci], kernel [k, k, Ci, Co] -> [B, Ho, Wo, Co]; values and gradients equal conv_plain's.
    """
    kernel_size, _, in_channels, out_channels = kernel.shape
    batch, height, width, _ = x.shape
    output_pixels = batch * ((height + 2 * padding - kernel_size) // stride + 1) * (
        (width + 2 * padding - kernel_size) // stride + 1)
    if kernel_size == 1 and padding == 0:
        cpu = functools.partial(conv_1x1_matmul, stride=stride)
    # A symbolic batch (jax.export) has no row count to decide by; the choice only changes the
    # weight gradient, which an exported predict path never takes: the forward is conv_plain's either way.
    elif isinstance(output_pixels, int) and uses_tap_weight_grad(kernel_size, in_channels, out_channels, output_pixels):
        cpu = functools.partial(conv_tap_weight_grad, stride=stride, padding=padding)
    else:
        return conv_plain(x, kernel, stride, padding)
    return lax.platform_dependent(x, kernel, cpu=cpu, default=functools.partial(conv_plain, stride=stride, padding=padding))


class Conv(nn.Module):
    """Square-kernel convolution with torch-style symmetric padding kernel_size // 2.

    Parameters as flax.linen.Conv's: `kernel` [k, k, Ci, Co] and `bias` [Co], created in the same
    order with the same initializer defaults, so checkpoints and the torchvision converter apply.
    Computes in `dtype` (parameters stay float32). fast=True: conv_fast, else conv_plain.
    x [B, H, W, Ci] -> [B, ceil(H / stride), ceil(W / stride), features].
    """

    features: int
    kernel_size: int
    stride: int = 1
    use_bias: bool = True
    kernel_init: Callable = nn.initializers.lecun_normal()
    bias_init: Callable = nn.initializers.zeros_init()
    dtype: Any = jnp.float32
    fast: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, outputs: jax.Array | None = None) -> jax.Array:
        """outputs (a 1x1 convolution only): int [B], the one output channel each row b needs ->
        [B, H, W], equal to the full output's [b, :, :, outputs[b]] (the same products and sum),
        the other channels never computed."""
        kernel_shape = (self.kernel_size, self.kernel_size, x.shape[-1], self.features)
        kernel = self.param("kernel", self.kernel_init, kernel_shape, jnp.float32)
        bias = self.param("bias", self.bias_init, (self.features,), jnp.float32) if self.use_bias else None
        if outputs is not None:
            if self.kernel_size != 1 or self.stride != 1:
                raise ValueError("outputs is for a 1x1 convolution of stride 1")
            weights = kernel[0, 0].T[outputs].astype(self.dtype)  # [B, Ci]
            y = jnp.einsum("bhwc,bc->bhw", x.astype(self.dtype), weights)
            return y if bias is None else y + bias.astype(self.dtype)[outputs][:, None, None]
        convolve = conv_fast if self.fast else conv_plain
        y = convolve(x.astype(self.dtype), kernel.astype(self.dtype), self.stride, self.kernel_size // 2)
        return y if bias is None else y + bias.astype(self.dtype)


def conv_transpose_plain(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """XLA's transposed convolution with stride = kernel side, VALID (flax.linen.ConvTranspose's math).

    x [B, H, W, Ci], kernel [k, k, Ci, Co] -> [B, k H, k W, Co].
    """
    stride = kernel.shape[0]
    return lax.conv_transpose(x, kernel, (stride, stride), "VALID", dimension_numbers=DIMENSION_NUMBERS)


def conv_transpose_matmul(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """conv_transpose_plain as one matmul: the k x k output patches do not overlap when stride = k.

    Output pixel (k h + i, k w + j) = x[h, w] @ kernel[k - 1 - i, k - 1 - j] (the kernel is applied
    flipped, as lax.conv_transpose without transpose_kernel). Shapes as conv_transpose_plain.
    """
    batch, height, width, in_channels = x.shape
    side, _, _, out_channels = kernel.shape
    flipped = kernel[::-1, ::-1].transpose(2, 0, 1, 3).reshape(in_channels, side * side * out_channels)
    patches = (x.reshape(-1, in_channels) @ flipped).reshape(batch, height, width, side, side, out_channels)
    return patches.transpose(0, 1, 3, 2, 4, 5).reshape(batch, side * height, side * width, out_channels)


class ConvTranspose(nn.Module):
    """Transposed convolution whose stride equals its kernel side (VALID), like torch's ConvTranspose2d(k, stride=k).

    Parameters as flax.linen.ConvTranspose's (`kernel` [k, k, Ci, Co], `bias` [Co]). Computes in
    `dtype`. fast=True: conv_transpose_matmul on CPU, conv_transpose_plain elsewhere and with fast=False.
    x [B, H, W, Ci] -> [B, k H, k W, features].
    """

    features: int
    kernel_size: int
    use_bias: bool = True
    kernel_init: Callable = nn.initializers.lecun_normal()
    bias_init: Callable = nn.initializers.zeros_init()
    dtype: Any = jnp.float32
    fast: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel_shape = (self.kernel_size, self.kernel_size, x.shape[-1], self.features)
        kernel = self.param("kernel", self.kernel_init, kernel_shape, jnp.float32)
        x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
        if self.fast:
            y = lax.platform_dependent(x, kernel, cpu=conv_transpose_matmul, default=conv_transpose_plain)
        else:
            y = conv_transpose_plain(x, kernel)
        if self.use_bias:
            y = y + self.param("bias", self.bias_init, (self.features,), jnp.float32).astype(self.dtype)
        return y

    def selected_outputs(self, x: jax.Array, outputs: jax.Array) -> jax.Array:
        """A 1x1 convolution's output channel `outputs[r]` alone for each row r: x [R, H, W, Ci],
        outputs int [R] -> [R, H, W], equal to __call__(x)[r, :, :, outputs[r]] (the same products
        and sum), without computing the other channels."""
        if self.kernel_size != 1 or self.stride != 1:
            raise ValueError("selected_outputs is for a 1x1 convolution of stride 1")
        kernel = self.param("kernel", self.kernel_init, (1, 1, x.shape[-1], self.features), jnp.float32)
        weights = kernel[0, 0].T[outputs]  # [R, Ci]
        y = jnp.einsum("rhwc,rc->rhw", x.astype(self.dtype), weights.astype(self.dtype))
        if self.use_bias:
            bias = self.param("bias", self.bias_init, (self.features,), jnp.float32).astype(self.dtype)
            y = y + bias[outputs][:, None, None]
        return y
