"""Host paste of one detection at a time within its box window against torchvision's
paste_masks_in_image (thresholded at 0.5), including boxes that leave the image; and the window's
memory is its box's, not the image's."""

import numpy as np
import pytest

from maskrcnn_jax.inference.mask_windows import masks_from_windows, paste_mask_window, paste_mask_windows

torch = pytest.importorskip("torch")
roi_heads = pytest.importorskip("torchvision.models.detection.roi_heads")


def torchvision_binary_masks(masks: np.ndarray, boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    pasted = roi_heads.paste_masks_in_image(torch.from_numpy(masks)[:, None], torch.from_numpy(boxes), (height, width))
    return pasted[:, 0].numpy() > 0.5


def test_windows_equal_torchvision_paste_on_random_boxes():
    rng = np.random.default_rng(0)
    height, width, count = 97, 131, 60
    corners = rng.uniform([-20, -20], [width, height], size=(count, 2))
    sizes = rng.uniform(0.3, 90, size=(count, 2))
    # Each box reaches into the image: torchvision's slicing misplaces boxes wholly left of or above it.
    boxes = np.concatenate([corners, np.maximum(corners + sizes, 3.0)], axis=1).astype(np.float32)
    boxes[0] = [0, 0, width - 1, height - 1]  # the whole image
    boxes[1] = [5.2, 7.9, 5.4, 8.1]  # smaller than a pixel
    boxes[2] = [-10, -5, width + 10, height + 7]  # larger than the image on every side
    masks = rng.random((count, 28, 28)).astype(np.float32)
    windows = paste_mask_windows(masks, boxes, height, width)
    ours = masks_from_windows(windows, height, width)
    expected = torchvision_binary_masks(masks, boxes, height, width)
    # Float summation order differs from torch's interpolate: a few values land on the other side of 0.5.
    assert (ours != expected).mean() < 1e-4
    assert expected.sum() > 10000  # the comparison covers many pasted pixels
    for window, mask in zip(windows, expected):
        rows, columns = np.nonzero(mask)
        if len(rows):  # every pasted pixel lies inside the window
            assert window.top <= rows.min() and rows.max() < window.top + window.pixels.shape[0]
            assert window.left <= columns.min() and columns.max() < window.left + window.pixels.shape[1]


def test_box_outside_the_image_pastes_nothing():
    window = paste_mask_window(np.ones((28, 28), np.float32), np.array([200, 10, 260, 50], np.float32), 100, 150)
    assert window.pixels.size == 0 and window.area == 0
    assert not window.full(100, 150).any()


def test_window_is_the_size_of_its_box_on_a_large_image():
    """A 40x60 box on a 24-megapixel image: the window is about the box (expanded by 30/28), and
    pasting it touches no image-sized array."""
    mask = np.zeros((28, 28), np.float32)
    mask[7:21, 7:21] = 1.0
    window = paste_mask_window(mask, np.array([3000, 2000, 3060, 2040], np.float32), 4000, 6000)
    assert window.pixels.shape == (44, 66) and (window.top, window.left) == (1998, 2997)
    expected = torchvision_binary_masks(mask[None], np.array([[60, 20, 120, 60]], np.float32), 80, 150)[0]
    # The same box moved by (-2940, -1980) pastes the same pixels (an integer shift).
    np.testing.assert_array_equal(window.pixels, expected[18:62, 57:123])
