"""Host-side image and ground-truth transforms in numpy, for ONE example.

Legend: H W original image, h w resized image, Hc Wc canvas, N instances in a record,
M max_instances (padded), Sm cropped mask side.

The image path (`resized_shape`, `resize_image`, `normalize_image`, `pad_image`) reproduces
torchvision's `GeneralizedRCNNTransform`: resize with scale = min(min_size/short, max_size/long),
bilinear with align_corners=False, normalise with ImageNet statistics, zero-pad bottom/right.
Training examples carry the resized photo rounded to uint8 instead (`transform_image`): a quarter of
float32's bytes between grain's processes and to the device, which normalises it
(`maskrcnn_jax.detector.inputs`); evaluation keeps the float32 path, torchvision's input exactly.
"""

import dataclasses
import math

import numpy as np
from absl import logging

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

    Args: image uint8 or float [H, W, C] (any C, e.g. 3 for RGB or N for stacked masks).
    Returns: float32 [out_height, out_width, C].
    """
    return resize_image_window(image, out_height, out_width, 0, 0, out_height, out_width)


def resize_image_window(image: np.ndarray, out_height: int, out_width: int,
                        top: int, left: int, window_height: int, window_width: int) -> np.ndarray:
    """The window [top:top+window_height, left:left+window_width] of `resize_image`'s output.

    Computes only the window, so a large-scale-jitter crop never materialises the full upscaled image.
    Args: image uint8 or float [H, W, C].
    Returns: float32 [window_height, window_width, C].
    """
    image = np.asarray(image)
    height, width, channels = image.shape
    y_low, y_high, y_weight = (a[top:top + window_height] for a in _source_coordinates(height, out_height))
    x_low, x_high, x_weight = (a[left:left + window_width] for a in _source_coordinates(width, out_width))
    # Columns then rows (torch's order), each as low + (high - low) * weight updated in place, on
    # rows flattened to (W * C) so every op runs over long contiguous lines; the column gathers
    # stay in the source dtype. Only the source rows the window needs are touched. This is the
    # hot loop of loading; it differs from torch's low * (1 - w) + high * w by float32 rounding.
    first_row = int(y_low.min())
    source = image[first_row:int(y_high.max()) + 1].reshape(-1, width * channels)
    channel = np.arange(channels)
    columns = np.take(source, (x_low[:, None] * channels + channel).ravel(), axis=1).astype(np.float32)
    columns_high = np.take(source, (x_high[:, None] * channels + channel).ravel(), axis=1).astype(np.float32)
    columns_high -= columns
    columns_high *= np.repeat(x_weight, channels)[None]
    columns += columns_high
    out = np.take(columns, y_low - first_row, axis=0)
    out_high = np.take(columns, y_high - first_row, axis=0)
    out_high -= out
    out_high *= y_weight[:, None]
    out += out_high
    return out.reshape(window_height, window_width, channels)


def normalize_image(image: np.ndarray, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> np.ndarray:
    """((image / 255) - mean) / std per channel.

    Args: image uint8 or float in [0, 255], [H, W, 3].
    Returns: float32 [H, W, 3].
    """
    normalized = np.array(image, dtype=np.float32)
    height, width, channels = normalized.shape
    _normalize_rows_in_place(normalized.reshape(height, width * channels), mean, std)
    return normalized


def _normalize_rows_in_place(rows: np.ndarray, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> None:
    """`normalize_image` on float32 [h, w * 3] rows (a view into a canvas works), in place.

    Per-channel constants are tiled over the flattened rows: numpy broadcasts over a short
    length-3 inner axis many times slower than over long contiguous lines.
    """
    width = rows.shape[1] // len(mean)
    rows /= np.float32(255.0)
    rows -= np.tile(np.asarray(mean, np.float32), width)[None]
    rows /= np.tile(np.asarray(std, np.float32), width)[None]


def pad_image(image: np.ndarray, canvas_height: int, canvas_width: int, dtype=None) -> np.ndarray:
    """Zero-pads bottom and right (after normalising, as torchvision does).

    Args: image [h, w, C] with h <= canvas_height, w <= canvas_width; dtype of the canvas (default
      the image's; values are cast as numpy's astype does).
    Returns: dtype [canvas_height, canvas_width, C].
    """
    height, width = image.shape[:2]
    if height > canvas_height or width > canvas_width:
        raise ValueError(f"image {height}x{width} does not fit the canvas {canvas_height}x{canvas_width}")
    canvas = np.zeros((canvas_height, canvas_width, *image.shape[2:]), dtype or image.dtype)
    canvas[:height, :width] = image
    return canvas


@dataclasses.dataclass(frozen=True)
class Geometry:
    """Where an example's image lands: resize by (scale_y, scale_x), crop a window, maybe flip.

    The window [top:top+height, left:left+width] of the resized image (resized_height x
    resized_width) is what the canvas shows at its top-left; (height, width) is `image_size`.
    """

    original_height: int
    original_width: int
    resized_height: int
    resized_width: int
    top: int
    left: int
    height: int
    width: int
    flip: bool

    def replace(self, **changes) -> "Geometry":
        return dataclasses.replace(self, **changes)

    @property
    def scale_y(self) -> float:
        return self.resized_height / self.original_height

    @property
    def scale_x(self) -> float:
        return self.resized_width / self.original_width


def evaluation_geometry(height: int, width: int, *, canvas_size: tuple[int, int],
                        min_size: float, max_size: float) -> Geometry:
    """torchvision's deterministic resize; raises if the resized image does not fit the canvas."""
    resized_height, resized_width = resized_shape(height, width, min_size, max_size)
    if resized_height > canvas_size[0] or resized_width > canvas_size[1]:
        raise ValueError(f"{height}x{width} resizes to {resized_height}x{resized_width}, larger than "
                         f"the canvas {canvas_size}: raise the canvas or lower max_size")
    return Geometry(height, width, resized_height, resized_width, 0, 0, resized_height, resized_width, False)


def training_geometry(rng: np.random.Generator, height: int, width: int, *,
                      canvas_size: tuple[int, int], min_size: float, max_size: float,
                      jitter_range: tuple[float, float] = (1.0, 1.0), large_scale_jitter: bool = False,
                      flip_probability: float = 0.5) -> Geometry:
    """Random scale jitter, crop to the canvas when the image outgrows it, and horizontal flip.

    Base scale: torchvision's min/max-size scale, or with `large_scale_jitter` the scale that fits
    the image inside the canvas (Ghiasi et al. 2021 use jitter_range (0.1, 2.0) with it). The base is
    multiplied by a factor drawn uniformly from `jitter_range`; (1, 1) is torchvision's recipe.
    """
    if large_scale_jitter:
        base_scale = min(canvas_size[0] / height, canvas_size[1] / width)
    else:
        base_scale = resize_scale(height, width, min_size, max_size)
    scale = base_scale * rng.uniform(jitter_range[0], jitter_range[1])
    resized_height, resized_width = scaled_shape(height, width, scale)
    window_height = min(resized_height, canvas_size[0])
    window_width = min(resized_width, canvas_size[1])
    top = int(rng.integers(0, resized_height - window_height + 1))
    left = int(rng.integers(0, resized_width - window_width + 1))
    flip = bool(rng.uniform() < flip_probability)
    return Geometry(height, width, resized_height, resized_width, top, left, window_height, window_width, flip)


def transform_image(image: np.ndarray, geometry: Geometry, canvas_size: tuple[int, int],
                    dtype=np.uint8) -> np.ndarray:
    """Resize, crop, flip and zero-pad one image; uint8: rounded to bytes (the device normalises them,
    `detector.inputs.model_images`), float32: normalised here, unrounded (torchvision's input exactly).

    Args: image uint8 [H, W, 3] RGB.
    Returns: dtype [Hc, Wc, 3], zero outside the (height, width) window.
    """
    window = resize_image_window(image, geometry.resized_height, geometry.resized_width,
                                 geometry.top, geometry.left, geometry.height, geometry.width)
    if geometry.flip:
        window = window[:, ::-1]
    if np.dtype(dtype) == np.uint8:
        np.rint(window, out=window)  # bilinear mixes of bytes stay within [0, 255]
        return pad_image(window, canvas_size[0], canvas_size[1], np.uint8)
    # Same as pad_image(normalize_image(window)), writing into the canvas once (a loading hot spot).
    canvas = pad_image(window, canvas_size[0], canvas_size[1])
    _normalize_rows_in_place(canvas.reshape(canvas_size[0], -1)[:geometry.height, :geometry.width * 3])
    return canvas


def _flip_boxes(boxes: np.ndarray, width: int) -> np.ndarray:
    """Horizontal mirror of xyxy boxes [N, 4] in an image `width` pixels wide (its own inverse)."""
    return np.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], axis=1)


def transform_boxes(boxes: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Original-pixel boxes to window pixels: scale, shift by the crop, clip to the window, flip.

    Args: boxes float [N, 4] xyxy in original pixels.
    Returns: float32 [N, 4] xyxy in resized-window pixels (may have zero area after clipping).
    """
    scale = np.array([geometry.scale_x, geometry.scale_y] * 2, np.float32)
    offset = np.array([geometry.left, geometry.top] * 2, np.float32)
    limit = np.array([geometry.width, geometry.height] * 2, np.float32)
    boxes = np.clip(np.asarray(boxes, np.float32).reshape(-1, 4) * scale - offset, 0.0, limit)
    return _flip_boxes(boxes, geometry.width) if geometry.flip else boxes


def unflipped_boxes_in_original(boxes: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Inverse of `transform_boxes` (without the clip): window pixels back to original pixels.

    Args: boxes float [N, 4] xyxy in window pixels. Returns: float32 [N, 4] in original pixels.
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    if geometry.flip:
        boxes = _flip_boxes(boxes, geometry.width)
    offset = np.array([geometry.left, geometry.top] * 2, np.float32)
    scale = np.array([geometry.scale_x, geometry.scale_y] * 2, np.float32)
    return (boxes + offset) / scale


def window_in_original(geometry: Geometry) -> np.ndarray:
    """The crop window as an xyxy box in original pixels: float32 [4]."""
    return unflipped_boxes_in_original(np.array([[0, 0, geometry.width, geometry.height]]),
                                       geometry.replace(flip=False))[0]


def shrink_boxes_to_masks(masks: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Each box shrunk to the extent of its mask's pixels inside it, so a crop that cuts an object
    leaves the box of what is still visible (a clipped annotation box can be much larger).

    Args: masks uint8 [N, H, W]; boxes float [N, 4] xyxy in the masks' pixels.
    Returns: float32 [N, 4]; a box with no mask pixel inside has zero area.
    """
    shrunk = np.asarray(boxes, np.float32).reshape(-1, 4).copy()
    for index, (x1, y1, x2, y2) in enumerate(shrunk):
        top, left = int(np.floor(y1)), int(np.floor(x1))
        inside = masks[index, top:int(np.ceil(y2)), left:int(np.ceil(x2))]
        rows, cols = np.flatnonzero(inside.any(1)), np.flatnonzero(inside.any(0))
        if len(rows) == 0:
            shrunk[index] = [x1, y1, x1, y1]
            continue
        shrunk[index] = [max(x1, left + cols[0]), max(y1, top + rows[0]),
                         min(x2, left + cols[-1] + 1), min(y2, top + rows[-1] + 1)]
    return shrunk


def crop_masks_to_boxes(masks: np.ndarray, boxes: np.ndarray, mask_size: int) -> np.ndarray:
    """Bilinear samples of each full-image mask on a mask_size^2 grid over its box, thresholded at 0.5.

    Equals resizing the full mask to any scale and cropping the same box (up to the interpolation
    of the resize), without ever resizing full-image masks. Sample points are bin centres.
    Args: masks uint8 [N, H, W] binary; boxes float [N, 4] xyxy in the masks' pixels.
    Returns: uint8 [N, Sm, Sm] binary, Sm = mask_size.
    """
    count, height, width = masks.shape
    if count == 0:
        return np.zeros((0, mask_size, mask_size), np.uint8)
    bins = (np.arange(mask_size, dtype=np.float32) + 0.5) / mask_size
    # Continuous coordinates (pixel i spans [i, i+1)) minus 0.5 give array positions of pixel centres.
    ys = boxes[:, 1:2] + bins[None] * (boxes[:, 3:4] - boxes[:, 1:2]) - 0.5
    xs = boxes[:, 0:1] + bins[None] * (boxes[:, 2:3] - boxes[:, 0:1]) - 0.5
    ys = np.clip(ys, 0.0, height - 1)
    xs = np.clip(xs, 0.0, width - 1)
    y_low = np.floor(ys).astype(np.int64)
    x_low = np.floor(xs).astype(np.int64)
    y_high = np.minimum(y_low + 1, height - 1)
    x_high = np.minimum(x_low + 1, width - 1)
    y_weight = (ys - y_low)[:, :, None]
    x_weight = (xs - x_low)[:, None, :]
    index = np.arange(count)[:, None, None]

    def gather(rows, cols):
        return masks[index, rows[:, :, None], cols[:, None, :]].astype(np.float32)

    top = gather(y_low, x_low) * (1 - x_weight) + gather(y_low, x_high) * x_weight
    bottom = gather(y_high, x_low) * (1 - x_weight) + gather(y_high, x_high) * x_weight
    return ((top * (1 - y_weight) + bottom * y_weight) >= 0.5).astype(np.uint8)


def transform_example(record: dict, geometry: Geometry, *, canvas_size: tuple[int, int],
                      max_instances: int, mask_size: int = 112, min_box_size: float = 1.0,
                      image_dtype=np.uint8) -> dict:
    """One host record to one fixed-shape training/evaluation example.

    Boxes that the crop window cuts are shrunk to the visible part of their mask. Instances whose box is narrower or shorter than `min_box_size` window pixels after the
    resize/crop are dropped; beyond `max_instances`, the largest boxes are kept. Both drops are
    counted in the example ("dropped_degenerate", "dropped_overflow") and logged, never silent.
    The image is `transform_image`'s of image_dtype (uint8 or float32).
    Args: record with "image" uint8 [H, W, 3], "boxes" [N, 4], "labels" [N], "masks" uint8 [N, H, W].
    Returns: {"image" image_dtype [Hc, Wc, 3], "image_size" int32 [2], "original_size" int32 [2],
      "image_id" int64 [], "gt_boxes" float32 [M, 4], "gt_classes" int32 [M],
      "gt_masks" uint8 [M, Sm, Sm], "gt_valid" bool [M], "valid" bool [],
      "dropped_degenerate" int32 [], "dropped_overflow" int32 []}.
    """
    boxes = np.asarray(record["boxes"], np.float32).reshape(-1, 4)
    cropped = (geometry.height, geometry.width) != (geometry.resized_height, geometry.resized_width)
    window = window_in_original(geometry)
    # Boxes the crop window cuts (a 1e-3 px margin ignores float noise at the window's edges).
    cut = np.flatnonzero((boxes[:, :2] < window[:2] - 1e-3).any(1) | (boxes[:, 2:] > window[2:] + 1e-3).any(1))
    if cropped and len(cut):
        boxes = boxes.copy()
        clipped = np.concatenate([np.maximum(boxes[cut, :2], window[:2]), np.minimum(boxes[cut, 2:], window[2:])], 1)
        boxes[cut] = shrink_boxes_to_masks(record["masks"][cut], clipped)
    boxes = transform_boxes(boxes, geometry)
    sides = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    kept = np.flatnonzero(sides >= min_box_size)
    dropped_degenerate = len(boxes) - len(kept)
    areas = (boxes[kept, 2] - boxes[kept, 0]) * (boxes[kept, 3] - boxes[kept, 1])
    kept = np.sort(kept[np.argsort(-areas, kind="stable")[:max_instances]])
    dropped_overflow = len(boxes) - dropped_degenerate - len(kept)
    if dropped_degenerate or dropped_overflow:
        # Rate-limited: with scale jitter many images lose tiny objects; the batch carries exact counts.
        logging.log_every_n_seconds(
            logging.WARNING, "image %s: dropped %d instances with a box side < %s px after resize/crop "
            "and %d beyond max_instances=%d (logged at most every 10 s)", 10, record["image_id"],
            dropped_degenerate, min_box_size, dropped_overflow, max_instances)
    boxes = boxes[kept]
    masks = crop_masks_to_boxes(record["masks"][kept], unflipped_boxes_in_original(boxes, geometry), mask_size)
    if geometry.flip:
        masks = masks[:, :, ::-1]
    count = len(kept)
    padding = max_instances - count
    return {
        "image": transform_image(record["image"], geometry, canvas_size, image_dtype),
        "image_size": np.array([geometry.height, geometry.width], np.int32),
        "original_size": np.array([geometry.original_height, geometry.original_width], np.int32),
        "image_id": np.int64(record["image_id"]),
        "gt_boxes": np.pad(boxes, ((0, padding), (0, 0))),
        "gt_classes": np.pad(np.asarray(record["labels"], np.int32)[kept], (0, padding)),
        "gt_masks": np.pad(masks, ((0, padding), (0, 0), (0, 0))),
        "gt_valid": np.arange(max_instances) < count,
        "valid": np.bool_(True),
        "dropped_degenerate": np.int32(dropped_degenerate),
        "dropped_overflow": np.int32(dropped_overflow),
    }
