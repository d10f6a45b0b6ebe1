"""detector.chunks.map_valid_chunks against applying the function to every row, and the training loss
with the mask head on valid chunks only (spec.mask_head_chunk_size) against the plain path: same
losses and gradients."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from maskrcnn_jax.detector import DetectorSpec, ProposalSpec, SamplerSpec
from maskrcnn_jax.detector.chunks import map_valid_chunks
from maskrcnn_jax.detector.losses import make_loss_fn
from maskrcnn_jax.models import MaskRCNN, init_params


def test_valid_chunks_equal_every_row_and_skipped_chunks_are_zero():
    rng = np.random.default_rng(0)
    inputs = jnp.asarray(rng.normal(size=(2, 12, 5)).astype(np.float32))
    weights = jnp.asarray(rng.normal(size=(5, 3)).astype(np.float32))
    # Chunks of 4: chunk 0 valid in image 0 only, chunk 1 in image 1 only, chunk 2 in neither.
    valid = np.zeros((2, 12), bool)
    valid[0, :3] = True
    valid[1, 5] = True
    valid = jnp.asarray(valid)

    def per_row(w, x):
        return jnp.tanh(x @ w)

    chunked = map_valid_chunks(lambda x: per_row(weights, x), inputs, valid, chunk_size=4)
    np.testing.assert_allclose(chunked[:, :8], per_row(weights, inputs)[:, :8], rtol=1e-6)
    np.testing.assert_array_equal(chunked[:, 8:], 0.0)

    def masked_loss(w, apply):
        return jnp.sum(jnp.where(valid[..., None], apply(w) ** 2, 0.0))

    plain_grad = jax.grad(masked_loss)(weights, lambda w: per_row(w, inputs))
    chunked_grad = jax.grad(masked_loss)(weights, lambda w: map_valid_chunks(lambda x: per_row(w, x), inputs, valid, 4))
    np.testing.assert_allclose(chunked_grad, plain_grad, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="chunks of 5"):
        map_valid_chunks(lambda x: x, inputs, valid, chunk_size=5)


def test_loss_with_the_mask_head_on_valid_chunks_equals_the_plain_path():
    spec = DetectorSpec(num_classes=4, anchor_sizes=(8, 16, 32, 64, 128), train_proposals=ProposalSpec(200, 100),
                        rpn_sampler=SamplerSpec(0.7, 0.3, True, 64, 0.5),
                        roi_sampler=SamplerSpec(0.5, 0.5, False, 32, 0.25), mask_rois_per_image=16)
    model = MaskRCNN(num_classes=4, stage_sizes=(1, 1, 1, 1), stem_width=8, fpn_channels=16,
                     representation_size=32, mask_head_channels=16)
    params = init_params(model, jax.random.key(0))
    rng = np.random.default_rng(0)
    # Image 0: two objects, image 1: none, so some chunks of 4 slots hold positives and some do not.
    gt_boxes = np.zeros((2, 4, 4), np.float32)
    gt_boxes[0, :2] = [[10, 10, 50, 60], [40, 30, 90, 80]]
    gt_valid = np.zeros((2, 4), bool)
    gt_valid[0, :2] = True
    masks = np.zeros((2, 4, 112, 112), np.uint8)
    masks[:, :, 20:90, 10:100] = 1
    batch = {"image": jnp.asarray(rng.normal(size=(2, 96, 96, 3)).astype(np.float32)),
             "image_size": jnp.full((2, 2), 96, jnp.int32), "gt_boxes": jnp.asarray(gt_boxes),
             "gt_classes": jnp.asarray(np.tile(np.arange(1, 5, dtype=np.int32), (2, 1))),
             "gt_masks": jnp.asarray(masks), "gt_valid": jnp.asarray(gt_valid), "valid": jnp.ones(2, bool)}

    def value_and_grad(spec):
        return jax.jit(jax.value_and_grad(make_loss_fn(model, spec), has_aux=True))(params, batch, jax.random.key(3))

    (plain_loss, plain_metrics), plain_grads = value_and_grad(spec)
    (loss, metrics), grads = value_and_grad(dataclasses.replace(spec, mask_head_chunk_size=4))
    assert 0 < float(metrics["positive_rois"]) * 2 < 12  # fewer positives than slots: chunks are skipped
    assert float(metrics["loss_mask"]) > 0
    for name in plain_metrics:
        np.testing.assert_allclose(metrics[name], plain_metrics[name], rtol=1e-6, err_msg=name)
    np.testing.assert_allclose(loss, plain_loss, rtol=1e-6)
    for (path, leaf), plain in zip(jax.tree_util.tree_leaves_with_path(grads), jax.tree_util.tree_leaves(plain_grads)):
        np.testing.assert_allclose(leaf, plain, rtol=1e-5, atol=1e-7, err_msg=jax.tree_util.keystr(path))
