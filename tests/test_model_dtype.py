"""bfloat16 compute (MaskRCNN(dtype=jnp.bfloat16)): the parameter tree stays float32 and unchanged,
the features are bfloat16, every head's output is float32, and on the tiny model of
test_loss_tiny the training loss and its gradients are within measured tolerances of float32."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from test_loss_tiny import MODEL, SPEC, make_batch

from maskrcnn_jax.detector.losses import LOSS_NAMES, detector_losses
from maskrcnn_jax.models import init_params
from maskrcnn_jax.models.conv import (
    conv_1x1_matmul,
    conv_plain,
    conv_tap_weight_grad,
    conv_transpose_matmul,
    conv_transpose_plain,
)

BF16_MODEL = MODEL.clone(dtype=jnp.bfloat16)
# Tolerances, with what was measured on seeds 0-2 (2026-11-25): bfloat16's 8-bit mantissa moves
# the RPN scores, so the proposals and the sampled RoIs differ a little from float32's.
TOTAL_LOSS_RELATIVE = 5e-3  # measured at most 1.1e-3
RPN_LOSS_RELATIVE = 1e-3  # measured at most 7e-5: the sampled anchors do not depend on the model
GRADIENT_COSINE = 0.99  # measured at least 0.998
GRADIENT_RELATIVE_NORM = 0.15  # measured at most 0.067
BOXES = [[[10, 10, 50, 60], [40, 30, 90, 80]], [[5, 5, 30, 30], [20, 20, 70, 90]]]


@pytest.fixture(scope="module")
def params():
    return init_params(MODEL, jax.random.key(0))


def test_bfloat16_keeps_the_float32_parameter_tree(params):
    bf16_shapes = jax.eval_shape(lambda key: init_params(BF16_MODEL, key), jax.random.key(0))
    assert jax.tree.structure(bf16_shapes) == jax.tree.structure(params)
    for leaf, bf16_leaf in zip(jax.tree.leaves(params), jax.tree.leaves(bf16_shapes)):
        assert (bf16_leaf.shape, bf16_leaf.dtype) == (leaf.shape, jnp.float32)


def test_bfloat16_features_and_float32_head_outputs(params):
    variables = {"params": params}
    apply = jax.jit(lambda model, *args, method: model.apply(variables, *args, method=method), static_argnums=0,
                    static_argnames="method")
    images = make_batch(0, [[], []])["image"]
    features = apply(BF16_MODEL, images, method="features")
    float32_features = apply(MODEL, images, method="features")
    for level, float32_level in zip(features, float32_features):
        assert level.dtype == jnp.bfloat16
        # Really computed in bfloat16 (8-bit mantissa): close to float32, but not equal.
        difference = np.linalg.norm(np.asarray(level, np.float32) - float32_level) / np.linalg.norm(float32_level)
        assert 1e-4 < difference < 5e-2
    objectness, box_deltas = apply(BF16_MODEL, features, method="rpn")
    assert all(level.dtype == jnp.float32 for level in objectness + box_deltas)
    rng = np.random.default_rng(0)
    box_rois = jnp.asarray(rng.normal(size=(2, 5, 7, 7, 16)), jnp.bfloat16)  # [B, R, S, S, C] as pooled
    class_logits, class_box_deltas = apply(BF16_MODEL, box_rois, method="box_head")
    assert class_logits.dtype == jnp.float32 and class_box_deltas.dtype == jnp.float32
    mask_rois = jnp.asarray(rng.normal(size=(2, 5, 14, 14, 16)), jnp.bfloat16)
    mask_logits = apply(BF16_MODEL, mask_rois, method="mask_head")
    assert mask_logits.shape == (2, 5, 28, 28, 4) and mask_logits.dtype == jnp.float32


@pytest.mark.parametrize("formulation", ["1x1 matmul", "3x3 tap-sum weight gradient", "2x2 transposed matmul"])
def test_fast_convolutions_in_bfloat16_stay_bfloat16_and_near_float32(formulation):
    kernel_size, fast, plain = {
        "1x1 matmul": (1, lambda x, k: conv_1x1_matmul(x, k, 2), lambda x, k: conv_plain(x, k, 2, 0)),
        "3x3 tap-sum weight gradient": (3, lambda x, k: conv_tap_weight_grad(x, k, 2, 1),
                                        lambda x, k: conv_plain(x, k, 2, 1)),
        "2x2 transposed matmul": (2, conv_transpose_matmul, conv_transpose_plain),
    }[formulation]
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, 9, 10, 32)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(kernel_size, kernel_size, 32, 24)), jnp.float32)
    expected, plain_vjp = jax.vjp(plain, x, kernel)
    cotangent = jnp.asarray(rng.normal(size=expected.shape), jnp.float32)
    ours, fast_vjp = jax.vjp(fast, x.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16))
    assert ours.dtype == jnp.bfloat16
    pairs = [(ours, expected)] + list(zip(fast_vjp(cotangent.astype(jnp.bfloat16)), plain_vjp(cotangent)))
    for value, reference in pairs:
        assert value.dtype == jnp.bfloat16
        error = np.linalg.norm(np.asarray(value, np.float32) - reference) / np.linalg.norm(reference)
        assert error < 1e-2  # measured 2.6e-3 to 3.0e-3: the inputs' bfloat16 rounding (2^-9 relative)


def test_bfloat16_loss_and_gradients_within_tolerance_of_float32(params):

    def value_and_grad(model):
        def total_loss(p, batch, key):
            losses, _ = detector_losses(model, SPEC, p, batch, key)
            return sum(losses[name] for name in LOSS_NAMES), losses

        return jax.jit(jax.value_and_grad(total_loss, has_aux=True))

    float32_step, bf16_step = value_and_grad(MODEL), value_and_grad(BF16_MODEL)
    for seed in range(3):
        batch, key = make_batch(seed, BOXES), jax.random.key(seed)
        (loss, losses), grads = float32_step(params, batch, key)
        (bf16_loss, bf16_losses), bf16_grads = bf16_step(params, batch, key)
        assert bf16_loss.dtype == jnp.float32
        assert abs(float(bf16_loss) - float(loss)) <= TOTAL_LOSS_RELATIVE * float(loss)
        for name in ("loss_objectness", "loss_rpn_box_reg"):
            assert abs(float(bf16_losses[name]) - float(losses[name])) <= RPN_LOSS_RELATIVE * float(losses[name]), name
        flat, bf16_flat = traverse_util.flatten_dict(grads), traverse_util.flatten_dict(bf16_grads)
        vector = np.concatenate([np.ravel(flat[path]) for path in sorted(flat)])
        bf16_vector = np.concatenate([np.ravel(bf16_flat[path]) for path in sorted(flat)])
        assert bf16_vector.dtype == np.float32
        cosine = vector @ bf16_vector / (np.linalg.norm(vector) * np.linalg.norm(bf16_vector))
        assert cosine >= GRADIENT_COSINE
        assert np.linalg.norm(bf16_vector - vector) / np.linalg.norm(vector) <= GRADIENT_RELATIVE_NORM
