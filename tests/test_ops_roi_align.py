"""roi_align / multilevel_roi_align against torchvision.ops.roi_align and MultiScaleRoIAlign."""

import functools
from collections import OrderedDict

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torchvision

from maskrcnn_jax.ops import multilevel_roi_align, roi_align, roi_levels

IMAGE_HEIGHT, IMAGE_WIDTH = 128, 192


def random_image_boxes(rng, count, max_side=150.0):
    """Boxes in image pixels, many partly or wholly outside the image, plus degenerate ones."""
    top_left = rng.uniform([-40, -40], [IMAGE_WIDTH + 10, IMAGE_HEIGHT + 10], size=(count, 2))
    sides = np.exp(rng.uniform(np.log(0.5), np.log(max_side), size=(count, 2)))
    boxes = np.concatenate([top_left, top_left + sides], axis=1)
    degenerate = [
        [20, 20, 20, 20],  # zero area
        [30, 10, 30, 50],  # zero width
        [0, 0, IMAGE_WIDTH, IMAGE_HEIGHT],  # whole image, on the border
        [IMAGE_WIDTH - 1, IMAGE_HEIGHT - 1, IMAGE_WIDTH, IMAGE_HEIGHT],  # bottom-right corner pixel
        [-30, -30, -6, -6],  # wholly outside, top-left
        [IMAGE_WIDTH + 8, 0, IMAGE_WIDTH + 40, 20],  # wholly outside, right
        [-4, -4, 4, 4],  # straddling the corner
    ]
    return np.concatenate([boxes, degenerate]).astype(np.float32)


def torch_features(features_hwc):
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(features_hwc, -1, 0)))[None]


def torch_rois(boxes):
    return torch.from_numpy(np.concatenate([np.zeros((len(boxes), 1), np.float32), boxes], axis=1))


@functools.cache
def jitted_roi_align(output_size, spatial_scale, sampling_ratio, aligned):
    return jax.jit(
        functools.partial(
            roi_align, output_size=output_size, spatial_scale=spatial_scale, sampling_ratio=sampling_ratio, aligned=aligned
        )
    )


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize(
    "output_size, spatial_scale, sampling_ratio",
    [(7, 0.25, 2), ((5, 3), 0.125, 1), (4, 1.0, 3)],
)
@pytest.mark.parametrize("seed", [0, 1])
def test_roi_align_matches_torchvision(aligned, output_size, spatial_scale, sampling_ratio, seed):
    rng = np.random.default_rng(seed)
    height, width = round(IMAGE_HEIGHT * spatial_scale), round(IMAGE_WIDTH * spatial_scale)
    features = rng.uniform(-1, 1, size=(height, width, 5)).astype(np.float32)
    boxes = random_image_boxes(rng, 40)
    expected = torchvision.ops.roi_align(
        torch_features(features), torch_rois(boxes), output_size, spatial_scale, sampling_ratio, aligned
    )
    actual = jitted_roi_align(output_size, spatial_scale, sampling_ratio, aligned)(features, boxes)
    np.testing.assert_allclose(np.asarray(actual), expected.permute(0, 2, 3, 1).numpy(), atol=1e-4)


def test_samples_outside_the_map_are_zero_and_border_samples_clamp():
    features = np.arange(1, 13, dtype=np.float32).reshape(3, 4, 1)
    boxes = np.array([[-10, -10, -2, -2], [3, 2, 4, 3]], np.float32)
    actual = np.asarray(roi_align(features, boxes, 1, 1.0, 1, aligned=False))
    # first box: its only sample (-6, -6) is outside [-1, H]; second: sample (3.5, 2.5) clamps to
    # the last row and column, so it reads the bottom-right value 12 exactly.
    np.testing.assert_array_equal(actual[:, 0, 0, 0], [0.0, 12.0])


def test_roi_align_gradient_matches_torch_autograd():
    rng = np.random.default_rng(3)
    features = rng.uniform(-1, 1, size=(16, 24, 3)).astype(np.float32)
    boxes = random_image_boxes(rng, 12) / 8.0
    cotangent = rng.normal(size=(len(boxes), 4, 4, 3)).astype(np.float32)

    def loss(features):
        return jnp.sum(roi_align(features, boxes, 4, 1.0, 2, aligned=False) * cotangent)

    torch_input = torch_features(features).requires_grad_(True)
    pooled = torchvision.ops.roi_align(torch_input, torch_rois(boxes), 4, 1.0, 2, False)
    (pooled * torch.from_numpy(cotangent).permute(0, 3, 1, 2)).sum().backward()
    expected = torch_input.grad[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(np.asarray(jax.grad(loss)(features)), expected, atol=1e-4)


def pyramid(rng, channels=4):
    return [
        rng.uniform(-1, 1, size=(IMAGE_HEIGHT // stride, IMAGE_WIDTH // stride, channels)).astype(np.float32)
        for stride in (4, 8, 16, 32)
    ]


@functools.cache
def jitted_multilevel(output_size):
    return jax.jit(functools.partial(multilevel_roi_align, output_size=output_size))


@pytest.mark.parametrize("output_size", [7, 14])
@pytest.mark.parametrize("seed", [0, 1])
def test_multilevel_matches_multiscale_roi_align(output_size, seed):
    rng = np.random.default_rng(seed)
    features = pyramid(rng)
    # sides up to 900 px so every level, including the clamped coarsest one, gets boxes
    boxes = random_image_boxes(rng, 60, max_side=900.0)
    boxes = np.concatenate([boxes, [[-300, -300, 500, 400]]]).astype(np.float32)  # a P5 box for sure
    levels = np.asarray(roi_levels(jnp.asarray(boxes), num_levels=4, min_level=2))
    assert set(levels.tolist()) == {0, 1, 2, 3}
    pooler = torchvision.ops.MultiScaleRoIAlign(["p2", "p3", "p4", "p5"], output_size, sampling_ratio=2)
    torch_maps = OrderedDict((name, torch_features(level)) for name, level in zip(["p2", "p3", "p4", "p5"], features))
    expected = pooler(torch_maps, [torch.from_numpy(boxes)], [(IMAGE_HEIGHT, IMAGE_WIDTH)])
    actual = jitted_multilevel(output_size)(features, boxes)
    np.testing.assert_allclose(np.asarray(actual), expected.permute(0, 2, 3, 1).numpy(), atol=1e-4)


def test_single_box_matches_multiscale_roi_align():
    rng = np.random.default_rng(9)
    features = pyramid(rng)
    boxes = np.array([[12.5, 30.25, 170.0, 126.0]], np.float32)
    pooler = torchvision.ops.MultiScaleRoIAlign(["p2", "p3", "p4", "p5"], 7, sampling_ratio=2)
    torch_maps = OrderedDict((name, torch_features(level)) for name, level in zip(["p2", "p3", "p4", "p5"], features))
    expected = pooler(torch_maps, [torch.from_numpy(boxes)], [(IMAGE_HEIGHT, IMAGE_WIDTH)])
    actual = multilevel_roi_align(features, boxes, 7)
    np.testing.assert_allclose(np.asarray(actual), expected.permute(0, 2, 3, 1).numpy(), atol=1e-4)


def test_roi_levels_match_level_mapper_by_hand():
    sides = np.array([0.0, 50.0, 111.9, 112.0, 223.9, 224.0, 447.9, 448.0, 5000.0], np.float32)
    boxes = np.stack([np.zeros_like(sides), np.zeros_like(sides), sides, sides], axis=1)
    levels = np.asarray(roi_levels(jnp.asarray(boxes), num_levels=4, min_level=2))
    # floor(4 + log2(side / 224) + 1e-6), clamped to P2..P5, minus 2
    np.testing.assert_array_equal(levels, [0, 0, 0, 1, 1, 2, 2, 3, 3])
    inverted = np.array([[50.0, 50.0, 10.0, 400.0]], np.float32)  # negative area
    assert int(roi_levels(jnp.asarray(inverted), num_levels=4, min_level=2)[0]) == 0


def test_batched_multilevel_roi_align_compiles_once():
    @jax.jit
    @chex.assert_max_traces(n=1)
    def pool_batch(features, boxes):
        return jax.vmap(lambda f, b: multilevel_roi_align(f, b, 7))(features, boxes)

    for seed in range(3):
        rng = np.random.default_rng(seed)
        images = [pyramid(rng) for _ in range(2)]
        batched = [np.stack(level) for level in zip(*images)]
        boxes = np.stack([random_image_boxes(rng, 9) for _ in range(2)])
        pooled = np.asarray(pool_batch(batched, boxes))
        single = np.asarray(jitted_multilevel(7)(images[1], boxes[1]))
        np.testing.assert_allclose(pooled[1], single, atol=1e-5)
