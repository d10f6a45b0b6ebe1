"""Anchor boxes for a feature pyramid, identical to torchvision's AnchorGenerator.

Anchors are compile-time constants, so they are built with numpy once per (image size, feature sizes).
"""

import numpy as np

DEFAULT_SIZES = ((32,), (64,), (128,), (256,), (512,))
DEFAULT_ASPECT_RATIOS = (0.5, 1.0, 2.0)


def base_anchors(sizes, aspect_ratios):
    """Zero-centred, rounded anchors for one level: [len(aspect_ratios) * len(sizes), 4] float32.

    Aspect ratio is height / width; ratios are the major axis and sizes the minor, as torchvision.
    """
    scales = np.asarray(sizes, dtype=np.float32)
    ratios = np.asarray(aspect_ratios, dtype=np.float32)
    height_ratios = np.sqrt(ratios)
    width_ratios = np.float32(1.0) / height_ratios
    widths = (width_ratios[:, None] * scales[None, :]).reshape(-1)
    heights = (height_ratios[:, None] * scales[None, :]).reshape(-1)
    # torchvision rounds half to even (torch.round), as np.round does.
    return np.round(np.stack([-widths, -heights, widths, heights], axis=1) / np.float32(2.0))


def anchor_grid(image_size, feature_sizes, sizes=DEFAULT_SIZES, aspect_ratios=DEFAULT_ASPECT_RATIOS):
    """Anchors for every level: a list of float32 [h_l * w_l * len(aspect_ratios) * len(sizes[l]), 4].

    image_size is the padded (H, W); feature_sizes is ((h_l, w_l), ...). Order as torchvision:
    positions row-major (y then x), base anchors minor. The stride is image_size // feature_size
    per dimension and anchor centres sit at k * stride (no half-stride offset).
    """
    if len(sizes) != len(feature_sizes):
        raise ValueError(f"{len(sizes)} anchor sizes for {len(feature_sizes)} feature levels")
    image_height, image_width = image_size
    anchors = []
    for level_sizes, (feature_height, feature_width) in zip(sizes, feature_sizes):
        stride_y = image_height // feature_height
        stride_x = image_width // feature_width
        shifts_x = np.arange(feature_width, dtype=np.float32) * np.float32(stride_x)
        shifts_y = np.arange(feature_height, dtype=np.float32) * np.float32(stride_y)
        shift_y, shift_x = np.meshgrid(shifts_y, shifts_x, indexing="ij")
        shifts = np.stack([shift_x, shift_y, shift_x, shift_y], axis=-1).reshape(-1, 1, 4)
        level_anchors = shifts + base_anchors(level_sizes, aspect_ratios)[None, :, :]
        anchors.append(level_anchors.reshape(-1, 4).astype(np.float32))
    return anchors
