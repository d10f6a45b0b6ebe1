"""Host-side image and ground-truth transforms in numpy, for ONE example.

Legend: H W original image, h w resized image, Hc Wc canvas, N instances in a record,
M max_instances (padded), Sm cropped mask side.

The image path (`resized_shape`, `resize_image`, `normalize_image`, `pad_image`) reproduces
torchvision's `GeneralizedRCNNTransform`: resize with scale = min(min_size/short, max_size/long),
bilinear with align_corners=False, normalise with ImageNet statistics, zero-pad bottom/right.
"""

import math

import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resize_scale(height: int, width: int, min_size: float, max_size: float) -> float:
    """torchvision's resize factor: the short side to min_size unless the long side passes max_size."""
    return min(min_size / min(height, width), max_size / max(height, width))


def scaled_shape(height: int, width: int, scale: float) -> tuple[int, int]:
    """Output (h, w) of torch `F.interpolate(scale_factor=scale)`: floor(side * scale), at least 1."""
    # Same float expression as torch's `_interp_output_size`, so rounding at .999 agrees.
    return max(1, math.floor(float(height) * scale)), max(1, math.floor(float(width) * scale))


def resized_shape(height: int, width: int, min_size: float, max_size: float) -> tuple[int, int]:
    """(h, w) after torchvision's min/max-size resize of an image of shape (height, width)."""
    return scaled_shape(height, width, resize_scale(height, width, min_size, max_size))


def _source_coordinates(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear neighbours and weights along one axis, as torch's align_corners=False kernel.

    Returns (low index [out], high index [out], weight of high [out]).
    """
    scale = np.float32(in_size) / np.float32(out_size)
    # torch evaluates scale * (i + 0.5) - 0.5 in float32 as one fused multiply-add (one rounding);
    # the float64 product is exact, so rounding it once to float32 gives torch's coordinates.
    source = ((np.arange(out_size) + 0.5) * np.float64(scale) - 0.5).astype(np.float32)
    source = np.maximum(source, np.float32(0.0))  # torch clamps negative coordinates to 0
    low = np.minimum(np.floor(source).astype(np.int64), in_size - 1)
    high = np.minimum(low + 1, in_size - 1)
    return low, high, (source - low).astype(np.float32)


def resize_image(image: np.ndarray, out_height: int, out_width: int) -> np.ndarray:
    """Bilinear resize, matching torch `F.interpolate(mode='bilinear', align_corners=False)`.

    Args: image float [H, W, C] (any C, e.g. 3 for RGB or N for stacked masks).
    Returns: float32 [out_height, out_width, C].
    """
    image = np.asarray(image, dtype=np.float32)
    height, width = image.shape[:2]
    y_low, y_high, y_weight = _source_coordinates(height, out_height)
    x_low, x_high, x_weight = _source_coordinates(width, out_width)
    # Separable: interpolate rows first, then columns (the same weights torch applies).
    rows = (image[y_low] * (1.0 - y_weight)[:, None, None]
            + image[y_high] * y_weight[:, None, None])
    out = (rows[:, x_low] * (1.0 - x_weight)[None, :, None]
           + rows[:, x_high] * x_weight[None, :, None])
    return out.astype(np.float32)


def normalize_image(image: np.ndarray, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> np.ndarray:
    """((image / 255) - mean) / std per channel.

    Args: image uint8 or float in [0, 255], [H, W, 3].
    Returns: float32 [H, W, 3].
    """
    image = np.asarray(image, dtype=np.float32) / np.float32(255.0)
    return (image - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def pad_image(image: np.ndarray, canvas_height: int, canvas_width: int) -> np.ndarray:
    """Zero-pads bottom and right (after normalising, as torchvision does).

    Args: image [h, w, C] with h <= canvas_height, w <= canvas_width.
    Returns: same dtype [canvas_height, canvas_width, C].
    """
    height, width = image.shape[:2]
    if height > canvas_height or width > canvas_width:
        raise ValueError(f"image {height}x{width} does not fit the canvas {canvas_height}x{canvas_width}")
    return np.pad(image, ((0, canvas_height - height), (0, canvas_width - width), (0, 0)))
