"""bfloat16 compute (MaskRCNN(dtype=jnp.bfloat16)): the parameter tree stays float32 and unchanged,
the features are bfloat16, every head's output is float32, and on the tiny model of
test_loss_tiny the training loss and its gradients are within measured tolerances of float32."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from test_loss_tiny import MODEL, SPEC, make_batch

from maskrcnn_jax.detector.losses import LOSS_NAMES, detector_losses
from maskrcnn_jax.models import init_params

BF16_MODEL = MODEL.clone(dtype=jnp.bfloat16)
# Tolerances, with what was measured on seeds 0-2 (2026-11-25): bfloat16's 8-bit mantissa moves
# the RPN scores, so the proposals and the sampled RoIs differ a little from float32's.
TOTAL_LOSS_RELATIVE = 5e-3  # measured at most 1.1e-3
RPN_LOSS_RELATIVE = 1e-3  # measured at most 7e-5: the sampled anchors do not depend on the model
GRADIENT_COSINE = 0.99  # measured at least 0.998
GRADIENT_RELATIVE_NORM = 0.15  # measured at most 0.067
BOXES = [[[10, 10, 50, 60], [40, 30, 90, 80]], [[5, 5, 30, 30], [20, 20, 70, 90]]]


def test_bfloat16_keeps_the_float32_parameter_tree():
    params = init_params(MODEL, jax.random.key(0))
    bf16_params = init_params(BF16_MODEL, jax.random.key(0))
    assert jax.tree.structure(params) == jax.tree.structure(bf16_params)
    for leaf, bf16_leaf in zip(jax.tree.leaves(params), jax.tree.leaves(bf16_params)):
        assert bf16_leaf.dtype == jnp.float32
        np.testing.assert_array_equal(leaf, bf16_leaf)


def test_bfloat16_features_and_float32_head_outputs():
    params = {"params": init_params(MODEL, jax.random.key(0))}
    images = make_batch(0, [[], []])["image"]
    features = BF16_MODEL.apply(params, images, method="features")
    float32_features = MODEL.apply(params, images, method="features")
    for level, float32_level in zip(features, float32_features):
        assert level.dtype == jnp.bfloat16
        # Really computed in bfloat16 (8-bit mantissa): close to float32, but not equal.
        difference = np.linalg.norm(np.asarray(level, np.float32) - float32_level) / np.linalg.norm(float32_level)
        assert 1e-4 < difference < 5e-2
    objectness, box_deltas = BF16_MODEL.apply(params, features, method="rpn")
    assert all(level.dtype == jnp.float32 for level in objectness + box_deltas)
    rng = np.random.default_rng(0)
    box_rois = jnp.asarray(rng.normal(size=(2, 5, 7, 7, 16)), jnp.bfloat16)  # [B, R, S, S, C] as pooled
    class_logits, class_box_deltas = BF16_MODEL.apply(params, box_rois, method="box_head")
    assert class_logits.dtype == jnp.float32 and class_box_deltas.dtype == jnp.float32
    mask_rois = jnp.asarray(rng.normal(size=(2, 5, 14, 14, 16)), jnp.bfloat16)
    mask_logits = BF16_MODEL.apply(params, mask_rois, method="mask_head")
    assert mask_logits.shape == (2, 5, 28, 28, 4) and mask_logits.dtype == jnp.float32


def test_bfloat16_loss_and_gradients_within_tolerance_of_float32():
    params = init_params(MODEL, jax.random.key(0))

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
