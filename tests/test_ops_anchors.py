"""anchor_grid against torchvision's AnchorGenerator on padded images with an ImageList."""

import numpy as np
import pytest
import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList

from maskrcnn_jax.ops import anchor_grid


def torchvision_anchors(image_size, feature_sizes, sizes, aspect_ratios):
    generator = AnchorGenerator(sizes=sizes, aspect_ratios=(aspect_ratios,) * len(sizes))
    images = ImageList(torch.zeros(1, 3, *image_size), [image_size])
    features = [torch.zeros(1, 1, h, w) for h, w in feature_sizes]
    return generator(images, features)[0].numpy()


@pytest.mark.parametrize(
    "image_size, feature_sizes",
    [
        ((800, 1216), ((200, 304), (100, 152), (50, 76), (25, 38), (13, 19))),
        ((128, 96), ((32, 24), (16, 12), (8, 6), (4, 3), (2, 2))),
        ((100, 70), ((25, 18), (13, 9), (7, 5), (4, 3), (2, 2))),  # strides that do not divide evenly
    ],
)
def test_default_anchors_match_torchvision(image_size, feature_sizes):
    sizes = ((32,), (64,), (128,), (256,), (512,))
    ratios = (0.5, 1.0, 2.0)
    levels = anchor_grid(image_size, feature_sizes)
    for level, (h, w) in zip(levels, feature_sizes):
        assert level.dtype == np.float32 and level.shape == (h * w * 3, 4)
    np.testing.assert_array_equal(np.concatenate(levels), torchvision_anchors(image_size, feature_sizes, sizes, ratios))


def test_several_sizes_per_level_match_torchvision():
    sizes = ((16, 24), (48, 64))
    ratios = (0.25, 1.0, 3.0)
    image_size, feature_sizes = (64, 80), ((16, 20), (8, 10))
    levels = anchor_grid(image_size, feature_sizes, sizes=sizes, aspect_ratios=ratios)
    assert [len(level) for level in levels] == [16 * 20 * 6, 8 * 10 * 6]
    np.testing.assert_array_equal(np.concatenate(levels), torchvision_anchors(image_size, feature_sizes, sizes, ratios))


def test_anchor_layout_by_hand():
    (level,) = anchor_grid((8, 8), ((2, 2),), sizes=((2,),), aspect_ratios=(1.0,))
    # stride 4, centres at 0 and 4, half side 1; positions row-major (y then x)
    expected = [[-1, -1, 1, 1], [3, -1, 5, 1], [-1, 3, 1, 5], [3, 3, 5, 5]]
    np.testing.assert_array_equal(level, expected)
