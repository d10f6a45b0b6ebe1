"""Box ops against torchvision.ops and torchvision's BoxCoder on random and degenerate boxes."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torchvision
from torchvision.models.detection._utils import BoxCoder

from maskrcnn_jax.ops import box_area, box_iou, clip_boxes, decode_boxes, encode_boxes, small_boxes_valid


def random_boxes(rng, count, extent=100.0, max_side=40.0):
    top_left = rng.uniform(-10, extent, size=(count, 2))
    sides = rng.uniform(0, max_side, size=(count, 2))
    return np.concatenate([top_left, top_left + sides], axis=1).astype(np.float32)


def degenerate_boxes():
    """Zero-area, line, border and outside boxes that the random ones rarely produce."""
    return np.array(
        [
            [10, 10, 10, 10],  # a point
            [10, 10, 30, 10],  # a horizontal line
            [0, 0, 100, 100],  # the whole image
            [-50, -50, -10, -10],  # wholly outside
            [90, 90, 150, 160],  # partly outside
            [0, 0, 1e-3, 1e-3],  # tiny
            [99, 0, 100, 100],  # on the border
        ],
        dtype=np.float32,
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_box_iou_matches_torchvision(seed):
    rng = np.random.default_rng(seed)
    boxes1 = np.concatenate([random_boxes(rng, 37), degenerate_boxes()])
    boxes2 = np.concatenate([random_boxes(rng, 23), degenerate_boxes()])
    expected = torchvision.ops.box_iou(torch.from_numpy(boxes1), torch.from_numpy(boxes2)).numpy()
    actual = np.asarray(box_iou(jnp.asarray(boxes1), jnp.asarray(boxes2)))
    # torchvision gives NaN where the union is 0; we document 0 there.
    nan = np.isnan(expected)
    assert nan.any(), "the degenerate boxes should produce a 0/0 case"
    np.testing.assert_allclose(actual[~nan], expected[~nan], atol=1e-4)
    np.testing.assert_array_equal(actual[nan], 0.0)
    np.testing.assert_allclose(np.asarray(box_area(jnp.asarray(boxes1))), torchvision.ops.box_area(torch.from_numpy(boxes1)).numpy(), atol=1e-4)


def test_box_iou_hand_computed():
    boxes1 = jnp.array([[0.0, 0.0, 2.0, 2.0]])
    boxes2 = jnp.array([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 2.0, 2.0], [5.0, 5.0, 6.0, 6.0]])
    np.testing.assert_allclose(np.asarray(box_iou(boxes1, boxes2)), [[1.0 / 7.0, 1.0, 0.0]], atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_clip_boxes_matches_torchvision(seed):
    rng = np.random.default_rng(seed)
    boxes = np.concatenate([random_boxes(rng, 50, extent=120.0), degenerate_boxes()])
    expected = torchvision.ops.clip_boxes_to_image(torch.from_numpy(boxes), (70, 90)).numpy()
    clip_traced = jax.jit(clip_boxes)  # height and width traced, as per-image true sizes are
    np.testing.assert_allclose(np.asarray(clip_traced(jnp.asarray(boxes), 70, 90)), expected, atol=1e-6)
    np.testing.assert_allclose(np.asarray(clip_boxes(jnp.asarray(boxes), 70, 90)), expected, atol=1e-6)


@pytest.mark.parametrize("min_size", [1e-3, 1.0, 5.0])
def test_small_boxes_valid_matches_remove_small_boxes(min_size):
    rng = np.random.default_rng(3)
    boxes = np.concatenate([random_boxes(rng, 60, max_side=8.0), degenerate_boxes()])
    kept = torchvision.ops.remove_small_boxes(torch.from_numpy(boxes), min_size).numpy()
    valid = np.asarray(small_boxes_valid(jnp.asarray(boxes), min_size))
    np.testing.assert_array_equal(np.flatnonzero(valid), kept)


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
@pytest.mark.parametrize("seed", [0, 1])
def test_encode_matches_box_coder(weights, seed):
    rng = np.random.default_rng(seed)
    references = random_boxes(rng, 64) + np.float32([0, 0, 1, 1])  # positive sides, as anchors
    targets = random_boxes(rng, 64) + np.float32([0, 0, 1, 1])
    coder = BoxCoder(weights)
    expected = coder.encode_single(torch.from_numpy(targets), torch.from_numpy(references)).numpy()
    actual = np.asarray(encode_boxes(jnp.asarray(targets), jnp.asarray(references), weights))
    np.testing.assert_allclose(actual, expected, atol=1e-4)


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
@pytest.mark.parametrize("seed", [0, 1])
def test_decode_matches_box_coder_including_clamp(weights, seed):
    rng = np.random.default_rng(seed)
    references = random_boxes(rng, 64) + np.float32([0, 0, 1, 1])
    deltas = rng.normal(scale=0.5, size=(64, 4)).astype(np.float32)
    deltas[:8, 2:] = 60.0  # far past the clamp: exp would overflow without it
    coder = BoxCoder(weights, bbox_xform_clip=math.log(1000.0 / 16))
    expected = coder.decode_single(torch.from_numpy(deltas), torch.from_numpy(references)).numpy()
    actual = np.asarray(decode_boxes(jnp.asarray(deltas), jnp.asarray(references), weights))
    assert np.isfinite(actual).all()
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-3)


def test_per_class_decode_matches_box_coder():
    rng = np.random.default_rng(4)
    references = random_boxes(rng, 16) + np.float32([0, 0, 1, 1])
    deltas = rng.normal(size=(16, 5, 4)).astype(np.float32)  # [R, K, 4]
    weights = (10.0, 10.0, 5.0, 5.0)
    # torchvision decodes [R, 4K] codes against [R, 4] boxes
    expected = BoxCoder(weights).decode_single(torch.from_numpy(deltas.reshape(16, 20)), torch.from_numpy(references))
    actual = decode_boxes(jnp.asarray(deltas), jnp.asarray(references)[:, None, :], weights)
    np.testing.assert_allclose(np.asarray(actual), expected.numpy().reshape(16, 5, 4), rtol=1e-5, atol=1e-3)


def test_decode_inverts_encode():
    rng = np.random.default_rng(7)
    references = random_boxes(rng, 32) + np.float32([0, 0, 1, 1])
    targets = random_boxes(rng, 32) + np.float32([0, 0, 1, 1])
    weights = (10.0, 10.0, 5.0, 5.0)
    deltas = encode_boxes(jnp.asarray(targets), jnp.asarray(references), weights)
    np.testing.assert_allclose(np.asarray(decode_boxes(deltas, jnp.asarray(references), weights)), targets, atol=1e-3)


def test_box_ops_compile_once():
    @jax.jit
    @chex.assert_max_traces(n=1)
    def iou_and_decode(boxes1, boxes2, deltas):
        return box_iou(boxes1, boxes2), decode_boxes(deltas, boxes1, (1.0, 1.0, 1.0, 1.0))

    for seed in range(3):
        rng = np.random.default_rng(seed)
        boxes = random_boxes(rng, 16) + np.float32([0, 0, 1, 1])
        iou, _ = iou_and_decode(boxes, random_boxes(rng, 16), rng.normal(size=(16, 4)).astype(np.float32))
        np.testing.assert_allclose(np.diag(np.asarray(box_iou(boxes, boxes))), 1.0, atol=1e-6)
        assert iou.shape == (16, 16)
