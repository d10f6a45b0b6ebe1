"""The faster convolution formulations of models.conv equal lax.conv_general_dilated (values, input
and kernel gradients) on the kernel sizes, strides and paddings the model uses; the CPU program of
the model's convolution really is the fast one; the modules are drop-ins for Flax's; and the tiny
model's loss gradients equal those of the plain path."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import traverse_util
from test_loss_tiny import MODEL, SPEC, make_batch

from maskrcnn_jax.detector import losses as losses_module
from maskrcnn_jax.detector.losses import LOSS_NAMES, detector_losses
from maskrcnn_jax.models import conv, init_params
from maskrcnn_jax.models.conv import (
    Conv,
    ConvTranspose,
    conv_1x1_matmul,
    conv_fast,
    conv_plain,
    conv_tap_weight_grad,
    conv_transpose_matmul,
    conv_transpose_plain,
    kernel_grad_taps,
    uses_tap_weight_grad,
)

RELATIVE = 1e-5


def relative_error(ours, reference) -> float:
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    return float(np.linalg.norm(ours - reference) / np.linalg.norm(reference))


def random_case(seed, batch, height, width, in_channels, out_channels, kernel_size):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(batch, height, width, in_channels)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(kernel_size, kernel_size, in_channels, out_channels)), jnp.float32)
    return x, kernel, rng


@functools.partial(jax.jit, static_argnums=0)
def value_and_gradients(function, x, kernel, cotangent):
    """function(x, kernel) and its (input, kernel) gradients for one cotangent, as one program."""
    value, vjp = jax.vjp(function, x, kernel)
    return value, vjp(cotangent)


def assert_same_values_and_gradients(fast, plain, x, kernel, rng):
    cotangent = jnp.asarray(rng.normal(size=jax.eval_shape(plain, x, kernel).shape), jnp.float32)
    expected, plain_grads = value_and_gradients(plain, x, kernel, cotangent)
    ours, fast_grads = value_and_gradients(fast, x, kernel, cotangent)
    assert ours.shape == expected.shape and ours.dtype == expected.dtype
    assert relative_error(ours, expected) < RELATIVE
    for name, fast_grad, plain_grad in zip(("input", "kernel"), fast_grads, plain_grads):
        assert fast_grad.shape == plain_grad.shape
        assert relative_error(fast_grad, plain_grad) < RELATIVE, name


# (height, width) odd and even, so that strided outputs of both parities are covered.
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [(9, 12), (10, 7)])
def test_conv_1x1_matmul_equals_plain(stride, size):
    x, kernel, rng = random_case(0, 2, *size, 16, 24, 1)
    assert_same_values_and_gradients(
        lambda x, k: conv_1x1_matmul(x, k, stride), lambda x, k: conv_plain(x, k, stride, 0), x, kernel, rng)


# The model's kxk convolutions: 3x3 padding 1 at strides 1 and 2, the 7x7 stem at stride 2 with padding 3.
@pytest.mark.parametrize("kernel_size,stride", [(3, 1), (3, 2), (7, 2)])
@pytest.mark.parametrize("size", [(9, 12), (10, 7)])
def test_conv_tap_weight_grad_equals_plain(kernel_size, stride, size):
    padding = kernel_size // 2
    x, kernel, rng = random_case(1, 2, *size, 8, 12, kernel_size)
    assert_same_values_and_gradients(
        lambda x, k: conv_tap_weight_grad(x, k, stride, padding), lambda x, k: conv_plain(x, k, stride, padding),
        x, kernel, rng)


def test_conv_transpose_matmul_equals_plain_and_flax():
    x, kernel, rng = random_case(2, 3, 5, 6, 8, 7, 2)
    assert_same_values_and_gradients(conv_transpose_matmul, conv_transpose_plain, x, kernel, rng)
    flax_layer = nn.ConvTranspose(7, (2, 2), strides=(2, 2), padding="VALID", use_bias=False)
    expected = flax_layer.apply({"params": {"kernel": kernel}}, x)
    assert relative_error(conv_transpose_plain(x, kernel), expected) < RELATIVE


def test_tap_weight_grad_is_chosen_for_the_measured_winners():
    # (k, Ci, Co, B Ho Wo) of R50-FPN at 512x512, batch 2: benchmark_convs.py measured the tap-sum
    # weight gradient faster for the first group and as fast or slower for the second.
    for shape in [(7, 3, 64, 2 * 256 * 256), (3, 64, 64, 2 * 128 * 128), (3, 128, 128, 2 * 64 * 64),
                  (3, 256, 256, 2 * 32 * 32), (3, 512, 512, 2 * 16 * 16), (3, 256, 256, 2 * 128 * 128),
                  (3, 256, 256, 256 * 14 * 14)]:
        assert uses_tap_weight_grad(*shape), shape
    for shape in [(3, 256, 256, 2 * 16 * 16), (3, 256, 256, 2 * 8 * 8), (1, 256, 256, 2 * 128 * 128)]:
        assert not uses_tap_weight_grad(*shape), shape


@pytest.mark.parametrize(
    "kernel_size,stride,x_shape,fast_program",
    [
        (1, 1, (1, 6, 5, 16), "dot"),
        (1, 2, (1, 6, 5, 16), "dot"),
        (3, 1, (2, 64, 64, 128), "taps"),
        (3, 2, (2, 128, 128, 128), "taps"),
        (3, 1, (2, 8, 8, 256), "plain"),
    ],
)
def test_conv_fast_runs_the_chosen_formulation_and_equals_plain(kernel_size, stride, x_shape, fast_program):
    padding = kernel_size // 2
    x, kernel, rng = random_case(3, *x_shape, x_shape[-1], kernel_size)
    assert_same_values_and_gradients(
        lambda x, k: conv_fast(x, k, stride, padding), lambda x, k: conv_plain(x, k, stride, padding), x, kernel, rng)
    cotangent = jnp.ones(conv_plain(x, kernel, stride, padding).shape)

    def gradient_program(convolve):
        """The StableHLO of the gradients, lowered for CPU: platform_dependent's CPU branch only."""
        vjp = jax.jit(lambda x, k, dy: jax.vjp(lambda a, b: convolve(a, b, stride, padding), x, k)[1](dy))
        text = vjp.lower(x, kernel, cotangent).as_text()
        return text.count("stablehlo.convolution"), text.count("stablehlo.dot_general")

    # The plain gradients are two convolutions (input, kernel). On CPU a 1x1 conv becomes dots only;
    # a tap-sum weight gradient keeps the input-gradient convolution and adds k*k dots.
    assert gradient_program(conv_plain) == (2, 0)
    expected = {"dot": (0, 2), "taps": (1, kernel_size**2), "plain": (2, 0)}[fast_program]
    assert gradient_program(conv_fast) == expected


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("kernel_size", [1, 3])
def test_conv_module_is_a_drop_in_for_flax_conv(kernel_size, stride):
    x, _, _ = random_case(4, 2, 9, 8, 6, 5, kernel_size)
    padding = kernel_size // 2
    flax_layer = nn.Conv(5, (kernel_size, kernel_size), strides=(stride, stride), padding=((padding, padding),) * 2)
    ours = Conv(5, kernel_size, stride)
    variables = flax_layer.init(jax.random.key(0), x)
    ours_variables = ours.init(jax.random.key(0), x)
    assert jax.tree.map(np.shape, variables) == jax.tree.map(np.shape, ours_variables)
    for leaf, ours_leaf in zip(jax.tree.leaves(variables), jax.tree.leaves(ours_variables)):
        np.testing.assert_array_equal(leaf, ours_leaf)  # same initializers, same keys
    for layer in (ours, ours.clone(fast=False)):
        assert relative_error(layer.apply(variables, x), flax_layer.apply(variables, x)) < RELATIVE


def test_conv_transpose_module_is_a_drop_in_for_flax_conv_transpose():
    x, _, _ = random_case(5, 2, 4, 5, 6, 5, 2)
    flax_layer = nn.ConvTranspose(5, (2, 2), strides=(2, 2), padding="VALID")
    variables = flax_layer.init(jax.random.key(0), x)
    ours_variables = ConvTranspose(5, 2).init(jax.random.key(0), x)
    for leaf, ours_leaf in zip(jax.tree.leaves(variables), jax.tree.leaves(ours_variables)):
        np.testing.assert_array_equal(leaf, ours_leaf)
    for layer in (ConvTranspose(5, 2), ConvTranspose(5, 2, fast=False)):
        assert relative_error(layer.apply(variables, x), flax_layer.apply(variables, x)) < RELATIVE
    # On CPU the fast module lowers to a matmul, no convolution.
    fast_program = jax.jit(ConvTranspose(5, 2).apply).lower(variables, x).as_text()
    assert "stablehlo.convolution" not in fast_program and "stablehlo.dot_general" in fast_program


def tiny_model_gradient_errors(monkeypatch, weight_grad_taps=kernel_grad_taps) -> tuple[float, dict]:
    """(relative loss difference, {parameter path: relative gradient error}) of the tiny model's
    training loss with every convolution on its CPU fast path (the tap-sum weight gradient
    `weight_grad_taps` forced for all kxk ones, too small to get it otherwise) against
    lax.conv_general_dilated everywhere.

    Both paths train on the same samples by construction: the fast path is fed the proposals the
    plain path drew its samples from. The two paths' features differ by float rounding, and a
    proposal that moves by 1e-7 can change which RoIs are sampled on some CPU kinds (issue 26);
    gradients on different samples would not be comparable. Frozen-BatchNorm constants, which get no
    gradient on either path, must stay exactly zero on both (error 0, else inf).
    """
    monkeypatch.setattr(conv, "TAP_WEIGHT_GRAD_MIN_MULTIPLY_ADDS", 0)
    tap_gradients = []
    monkeypatch.setattr(conv, "kernel_grad_taps", lambda *args: tap_gradients.append(args) or weight_grad_taps(*args))
    params = init_params(MODEL, jax.random.key(0))
    batch = make_batch(0, [[[10, 10, 50, 60], [40, 30, 90, 80]], [[5, 5, 30, 30], [20, 20, 70, 90]]])

    def value_and_grad(model):
        def total_loss(p):
            losses, aux = detector_losses(model, SPEC, p, batch, jax.random.key(0))
            return sum(losses[name] for name in LOSS_NAMES), (aux["rois"]["boxes"], aux["proposals"], aux["proposal_valid"])

        return jax.value_and_grad(total_loss, has_aux=True)

    (plain_loss, (plain_rois, proposals, proposal_valid)), plain_grads = jax.jit(
        value_and_grad(MODEL.clone(fast_convs=False)))(params)
    monkeypatch.setattr(losses_module, "training_proposals", lambda *args: (proposals, proposal_valid))
    (fast_loss, (fast_rois, _, _)), fast_grads = jax.jit(value_and_grad(MODEL))(params)
    # A tap-sum weight gradient traced (at least once) per kxk convolution applied: the stem,
    # 4 bottleneck 3x3 convs, 4 FPN output convs, the RPN conv on 5 levels and 4 mask-head convs.
    assert len(tap_gradients) >= 18
    np.testing.assert_array_equal(fast_rois, plain_rois)  # the same samples, by construction
    fast_flat, plain_flat = traverse_util.flatten_dict(fast_grads), traverse_util.flatten_dict(plain_grads)
    assert fast_flat.keys() == plain_flat.keys()
    errors = {}
    for path, plain_grad in plain_flat.items():
        name = "/".join(path)
        if np.any(plain_grad):
            errors[name] = relative_error(fast_flat[path], plain_grad)
        else:  # frozen-BatchNorm constants
            errors[name] = 0.0 if not np.any(fast_flat[path]) else np.inf
    return abs(float(fast_loss) - float(plain_loss)) / abs(float(plain_loss)), errors


def test_tiny_model_loss_gradients_equal_the_plain_convolutions(monkeypatch):
    loss_difference, errors = tiny_model_gradient_errors(monkeypatch)
    worst = max(errors, key=errors.get)
    print(f"fast vs plain: loss {loss_difference:.1e}, worst gradient {worst} {errors[worst]:.1e} (bound {RELATIVE:.0e})")
    assert loss_difference < RELATIVE
    assert errors[worst] < RELATIVE, worst


def test_tiny_model_gradient_check_catches_a_tap_dropped_from_the_weight_gradient(monkeypatch):
    """The check above is not blind: a tap-sum weight gradient that forgets one of its k*k taps (the
    last), a bug of the fast path alone, fails it by orders of magnitude."""
    _, errors = tiny_model_gradient_errors(monkeypatch, lambda *args: kernel_grad_taps(*args).at[-1, -1].set(0.0))
    worst = max(errors, key=errors.get)
    print(f"tap dropped: worst gradient {worst} {errors[worst]:.1e}")
    assert errors[worst] > 1e3 * RELATIVE
