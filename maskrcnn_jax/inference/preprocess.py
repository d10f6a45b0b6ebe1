"""Host-side preprocessing for prediction: torchvision's GeneralizedRCNNTransform in numpy.

Produces the one batch schema that prediction, evaluation and training read (the data pipeline's):
"image", "image_size", "original_size".

Legend: B batch, H W original image, h w resized image, Hc Wc canvas.
"""

import math
from typing import Sequence

import numpy as np

from maskrcnn_jax.data.transforms import normalize_image, pad_image, resize_image, resized_shape


def padded_canvas_size(height: int, width: int, size_divisible: int = 32) -> tuple[int, int]:
    """torchvision's padded size for one resized image: each side rounded up to a multiple of size_divisible."""
    return (
        int(math.ceil(height / size_divisible) * size_divisible),
        int(math.ceil(width / size_divisible) * size_divisible),
    )


def preprocess_image(
    image: np.ndarray, min_size: int, max_size: int, canvas_size: tuple[int, int] | None, size_divisible: int = 32
) -> tuple[np.ndarray, tuple[int, int]]:
    """Normalise, resize (min/max size, bilinear as torch), zero-pad bottom/right.

    image uint8 [H, W, 3] RGB (or float in [0, 255]: `maskrcnn_jax.inference.detector.as_rgb_image` of a float
    [0, 1] photo). canvas_size (Hc, Wc) from the config for fixed-shape batches, or None
    for torchvision parity (pad to the next multiple of size_divisible, one compile per such size).
    Returns (float32 [Hc, Wc, 3], resized (h, w)).
    """
    height, width = image.shape[:2]
    resized_height, resized_width = resized_shape(height, width, min_size, max_size)
    # torchvision normalises before resizing; bilinear weights are affine, but the order changes rounding.
    resized = resize_image(normalize_image(image), resized_height, resized_width)
    if canvas_size is None:
        canvas_size = padded_canvas_size(resized_height, resized_width, size_divisible)
    return pad_image(resized, canvas_size[0], canvas_size[1]), (resized_height, resized_width)


def preprocess_batch(
    images: Sequence[np.ndarray], min_size: int, max_size: int, canvas_size: tuple[int, int] | None, size_divisible: int = 32
) -> dict[str, np.ndarray]:
    """Preprocesses B images onto one canvas (the config's, or torchvision's padded batch size when None).

    Returns {"image": float32 [B, Hc, Wc, 3], "image_size": int32 [B, 2] resized (h, w),
    "original_size": int32 [B, 2] (H, W)}.
    """
    if canvas_size is None:
        shapes = [resized_shape(image.shape[0], image.shape[1], min_size, max_size) for image in images]
        canvas_size = padded_canvas_size(max(h for h, _ in shapes), max(w for _, w in shapes), size_divisible)
    padded, sizes = zip(*(preprocess_image(image, min_size, max_size, canvas_size) for image in images))
    return {
        "image": np.stack(padded),
        "image_size": np.asarray(sizes, np.int32),
        "original_size": np.asarray([image.shape[:2] for image in images], np.int32),
    }
