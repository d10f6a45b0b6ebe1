"""paste_masks_in_image against torchvision's, and roi_align cropping masks as torchvision's mask targets do
(crop_and_resize_masks, a test helper: the trainer uses ops.mask_targets_from_crops)."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torchvision
from torchvision.models.detection.roi_heads import paste_masks_in_image as torchvision_paste

from maskrcnn_jax.ops import paste_masks_in_image, roi_align

HEIGHT, WIDTH = 57, 83


def detection_boxes(rng, count):
    """Random boxes plus ones on the border, outside, tiny, zero-area and inverted.

    No box lies wholly outside the image: there torchvision's slicing wraps around negative
    indices and raises (see test_paste_wholly_outside_is_empty for ours).
    """
    top_left = rng.uniform([-20, -20], [WIDTH, HEIGHT], size=(count, 2))
    sides = np.exp(rng.uniform(np.log(0.3), np.log(70), size=(count, 2)))
    sides = np.maximum(sides, -top_left)
    special = [
        [0, 0, WIDTH, HEIGHT],  # whole image, on the border
        [10, 10, 10, 10],  # zero area
        [30.2, 5.7, 30.9, 6.1],  # smaller than a pixel
        [-15, -12, 8, 9],  # straddling the top-left corner
        [WIDTH - 5, HEIGHT - 4, WIDTH + 30, HEIGHT + 20],  # straddling the bottom-right corner
        [40, 30, 35, 25],  # inverted
    ]
    return np.concatenate([np.concatenate([top_left, top_left + sides], axis=1), special]).astype(np.float32)


def crop_and_resize_masks(masks, boxes, output_size, *, sampling_ratio=2):
    """Mask targets: full-image masks [M, H, W] (any dtype) cropped to boxes [M, 4] -> float32 [M, S, S].

    Equal to torchvision.ops.roi_align(masks[:, None], boxes, (S, S), 1.0, sampling_ratio,
    aligned=False)[:, 0]. torchvision's mask loss uses the adaptive sampling_ratio=-1, which needs
    data-dependent shapes; the static sampling_ratio here is the fixed-shape stand-in.
    """

    def crop_one(mask, box):
        pooled = roi_align(mask[:, :, None], box[None], output_size, 1.0, sampling_ratio, False, boxes_per_step=1)
        return pooled[0, :, :, 0]

    return jax.vmap(crop_one)(masks.astype(jnp.float32), boxes)


@functools.cache
def jitted_paste(height, width, padding):
    return jax.jit(functools.partial(paste_masks_in_image, height=height, width=width, padding=padding))


@pytest.mark.parametrize("mask_size, padding", [(28, 1), (14, 2)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_paste_matches_torchvision(mask_size, padding, seed):
    rng = np.random.default_rng(seed)
    boxes = detection_boxes(rng, 30)
    masks = rng.uniform(size=(len(boxes), mask_size, mask_size)).astype(np.float32)
    expected = torchvision_paste(torch.from_numpy(masks)[:, None], torch.from_numpy(boxes), (HEIGHT, WIDTH), padding)
    actual = jitted_paste(HEIGHT, WIDTH, padding)(masks, boxes)
    assert actual.shape == (len(boxes), HEIGHT, WIDTH) and actual.dtype == np.float32
    np.testing.assert_allclose(np.asarray(actual), expected[:, 0].numpy(), atol=1e-4)


def test_paste_binary_masks_threshold_like_torchvision():
    rng = np.random.default_rng(4)
    boxes = detection_boxes(rng, 20)
    masks = (rng.uniform(size=(len(boxes), 28, 28)) > 0.5).astype(np.float32)
    expected = torchvision_paste(torch.from_numpy(masks)[:, None], torch.from_numpy(boxes), (HEIGHT, WIDTH))[:, 0]
    actual = np.asarray(jitted_paste(HEIGHT, WIDTH, 1)(masks, boxes))
    ambiguous = np.abs(expected.numpy() - 0.5) < 1e-4
    np.testing.assert_array_equal((actual > 0.5)[~ambiguous], (expected.numpy() > 0.5)[~ambiguous])


def test_paste_full_mask_fills_its_integer_box():
    # A mask of ones pasted into box [10, 20, 29, 39] with padding 0 covers exactly rows 20..39 and
    # columns 10..29 (torchvision pastes the box inclusively after int truncation).
    pasted = np.asarray(paste_masks_in_image(np.ones((1, 8, 8), np.float32), np.array([[10.0, 20.0, 29.9, 39.5]]), 50, 40, padding=0))
    expected = np.zeros((50, 40), np.float32)
    expected[20:40, 10:30] = 1.0
    np.testing.assert_allclose(pasted[0], expected, atol=1e-6)


def test_paste_wholly_outside_is_empty():
    boxes = np.array(
        [[-30, -30, -10, -8], [-40, 5, -3, 30], [5, -40, 30, -3], [WIDTH + 3, 0, WIDTH + 20, 10], [0, HEIGHT + 2, 9, HEIGHT + 9]],
        np.float32,
    )
    pasted = np.asarray(jitted_paste(HEIGHT, WIDTH, 1)(np.ones((len(boxes), 28, 28), np.float32), boxes))
    np.testing.assert_array_equal(pasted, 0.0)


def test_paste_compiles_once():
    @jax.jit
    @chex.assert_max_traces(n=1)
    def paste(masks, boxes):
        return paste_masks_in_image(masks, boxes, HEIGHT, WIDTH)

    for seed in range(3):
        rng = np.random.default_rng(seed)
        boxes = detection_boxes(rng, 4)
        masks = rng.uniform(size=(len(boxes), 28, 28)).astype(np.float32)
        expected = torchvision_paste(torch.from_numpy(masks)[:, None], torch.from_numpy(boxes), (HEIGHT, WIDTH))
        np.testing.assert_allclose(np.asarray(paste(masks, boxes)), expected[:, 0].numpy(), atol=1e-4)


@pytest.mark.parametrize("output_size, sampling_ratio", [(28, 2), (14, 1)])
@pytest.mark.parametrize("seed", [0, 1])
def test_crop_and_resize_matches_roi_align(output_size, sampling_ratio, seed):
    rng = np.random.default_rng(seed)
    boxes = detection_boxes(rng, 10)
    masks = (rng.uniform(size=(len(boxes), HEIGHT, WIDTH)) > 0.6).astype(np.uint8)  # GT masks are uint8
    expected = torchvision.ops.roi_align(
        torch.from_numpy(masks).float()[:, None],
        [torch.from_numpy(box[None]) for box in boxes],  # box i crops mask i
        (output_size, output_size),
        1.0,
        sampling_ratio,
        False,
    )[:, 0]
    crop = jax.jit(functools.partial(crop_and_resize_masks, output_size=output_size, sampling_ratio=sampling_ratio))
    actual = crop(masks, boxes)
    assert actual.shape == (len(boxes), output_size, output_size)
    np.testing.assert_allclose(np.asarray(actual), expected.numpy(), atol=1e-4)
