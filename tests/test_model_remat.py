"""Rematerialisation (config.model.remat) trades memory for compute and changes nothing else: the
parameter tree, the losses, the gradients and v2's new running statistics equal those of the model
without it, on the tiny model of test_loss_tiny. v2 only: it has every layer kind v1 has (v1's frozen
norms are constants to remat) plus the batch statistics, and each architecture costs two compiles of
the loss and its gradients."""

import jax
import numpy as np
import pytest
from test_loss_tiny import MODEL, SPEC, make_batch

from maskrcnn_jax.detector.losses import make_loss_fn
from maskrcnn_jax.models import init_params

BOXES = [[[10, 10, 50, 60], [40, 30, 90, 80]], [[5, 5, 30, 30], [20, 20, 70, 90]]]
TOLERANCE = 1e-6  # the same operations in the same order: only XLA's fusion choices may differ


def loss_and_gradients(model, params, batch):
    loss_fn = make_loss_fn(model, SPEC)
    (loss, metrics), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(params, batch, jax.random.key(3))
    return loss, metrics, grads


def test_remat_all_gives_the_losses_gradients_and_statistics_of_the_plain_model():
    plain = MODEL.clone(architecture="v2")
    remat = plain.clone(remat="all")
    params = init_params(plain, jax.random.key(0))
    remat_shapes = jax.eval_shape(lambda key: init_params(remat, key), jax.random.key(0))
    assert jax.tree.structure(remat_shapes) == jax.tree.structure(params)
    batch = make_batch(0, BOXES)
    loss, metrics, grads = loss_and_gradients(plain, params, batch)
    remat_loss, remat_metrics, remat_grads = loss_and_gradients(remat, params, batch)
    print(f"v2: loss {float(loss):.6f}, remat difference {abs(float(loss - remat_loss)):.2e}")
    np.testing.assert_allclose(remat_loss, loss, rtol=TOLERANCE)
    for name in ("loss_objectness", "loss_classifier", "loss_box_reg", "loss_mask", "positive_rois"):
        np.testing.assert_allclose(remat_metrics[name], metrics[name], rtol=TOLERANCE, atol=TOLERANCE)
    assert max(float(np.abs(g).max()) for g in jax.tree.leaves(grads)) > 0
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=TOLERANCE), remat_grads, grads)
    statistics = metrics.get("norm_statistics", {})
    assert statistics
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=TOLERANCE, atol=TOLERANCE),
                 remat_metrics.get("norm_statistics", {}), statistics)


def test_an_unknown_remat_choice_is_refused():
    with pytest.raises(ValueError, match="unknown remat 'everything'"):
        init_params(MODEL.clone(remat="everything"), jax.random.key(0))
