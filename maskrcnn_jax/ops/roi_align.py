"""RoIAlign for one image as one bilinear gather, single-level and FPN multi-level.

Shape legend: H W feature map, C channels, R RoIs, S output size (S_h, S_w), L pyramid levels.

torchvision.ops.roi_align semantics with a static sampling_ratio > 0: each output bin averages
sampling_ratio^2 bilinear samples on a regular grid. torchvision's adaptive sampling_ratio=-1
(ceil(roi_size / output_size) samples) is not supported: the sample count would depend on the
box, so the shapes would depend on the data. A sample outside [-1, H] x [-1, W] contributes 0;
inside, coordinates are clamped to the map exactly as torchvision's bilinear_interpolate does.

Sample coordinates are separable (y depends only on the output row, x only on the column), so
the interpolation indices and weights are computed once per axis; the four corners of every
sample are then gathered as C-long rows of a flat [sum_l H_l * W_l, C] table, a few boxes at a
time. The multi-level op puts all levels in that table and gathers each box from its own level
only, so the work does not grow with the number of levels (pooling every level for every box and
selecting was the slower alternative, docs/benchmarks.md).
"""

import math

import jax
import jax.numpy as jnp

from maskrcnn_jax.ops.boxes import box_area

DEFAULT_SPATIAL_SCALES = (1 / 4, 1 / 8, 1 / 16, 1 / 32)
DEFAULT_BOXES_PER_STEP = 2


def roi_align(
    features, boxes, output_size, spatial_scale, sampling_ratio, aligned, *, boxes_per_step=DEFAULT_BOXES_PER_STEP
):
    """torchvision.ops.roi_align for one image: features [H, W, C], boxes [R, 4] xyxy image pixels -> [R, S_h, S_w, C].

    output_size is an int or (S_h, S_w); spatial_scale maps image pixels to feature pixels;
    sampling_ratio is a static int > 0; aligned=True shifts sample points by -0.5 pixel.
    boxes_per_step (static) sets how many boxes are gathered at once (a speed knob only).
    Gradients flow to the features; stop them on the boxes, as torchvision's RoIAlign has none.
    """
    features = jnp.asarray(features)
    height, width, channels = features.shape
    num_boxes = boxes.shape[0]
    return _gather_roi_align(
        features.reshape(height * width, channels),
        boxes,
        scales=jnp.full(num_boxes, spatial_scale, jnp.float32),
        heights=jnp.full(num_boxes, height, jnp.int32),
        widths=jnp.full(num_boxes, width, jnp.int32),
        offsets=jnp.zeros(num_boxes, jnp.int32),
        output_size=output_size,
        sampling_ratio=sampling_ratio,
        aligned=aligned,
        boxes_per_step=boxes_per_step,
    )


def roi_levels(boxes, num_levels, min_level, canonical_scale=224, canonical_level=4):
    """torchvision LevelMapper: pyramid level index (0 = min_level) of each box: [R, 4] -> int32 [R].

    level = floor(canonical_level + log2(sqrt(area) / canonical_scale) + 1e-6), clamped to the
    available levels. Zero-area and inverted boxes go to the finest level (torchvision would take
    the log of 0 or of a NaN there).
    """
    box_size = jnp.sqrt(jnp.maximum(box_area(boxes), 0.0))
    level = jnp.floor(canonical_level + jnp.log2(box_size / canonical_scale) + 1e-6)
    return (jnp.clip(level, min_level, min_level + num_levels - 1) - min_level).astype(jnp.int32)


def multilevel_roi_align(
    features,
    boxes,
    output_size,
    spatial_scales=DEFAULT_SPATIAL_SCALES,
    sampling_ratio=2,
    aligned=False,
    canonical_scale=224,
    canonical_level=4,
    *,
    boxes_per_step=DEFAULT_BOXES_PER_STEP,
):
    """torchvision MultiScaleRoIAlign for one image: features L maps [H_l, W_l, C] (P2..P5), boxes [R, 4] -> [R, S_h, S_w, C].

    Each box is pooled from the level chosen by roi_levels; spatial_scales[l] is level l's scale
    (powers of two, finest first), which fixes the level range as torchvision derives it.
    Other arguments as roi_align.
    """
    if len(features) != len(spatial_scales):
        raise ValueError(f"{len(features)} feature maps for {len(spatial_scales)} spatial scales")
    min_level = round(-math.log2(spatial_scales[0]))
    channels = features[0].shape[-1]
    level = roi_levels(boxes, len(features), min_level, canonical_scale, canonical_level)
    shapes = [feature.shape[:2] for feature in features]
    starts = [0]
    for height, width in shapes[:-1]:
        starts.append(starts[-1] + height * width)
    table = jnp.concatenate([feature.reshape(-1, channels) for feature in features], axis=0)
    return _gather_roi_align(
        table,
        boxes,
        scales=jnp.asarray(spatial_scales, jnp.float32)[level],
        heights=jnp.asarray([height for height, _ in shapes], jnp.int32)[level],
        widths=jnp.asarray([width for _, width in shapes], jnp.int32)[level],
        offsets=jnp.asarray(starts, jnp.int32)[level],
        output_size=output_size,
        sampling_ratio=sampling_ratio,
        aligned=aligned,
        boxes_per_step=boxes_per_step,
    )


def _axis_samples(start, end, size, bins, sampling_ratio, aligned):
    """Bilinear taps along one axis: start/end [R] in feature pixels, size int [R] map extent.

    Returns (low, high) indices int32 [R, bins * sampling_ratio] and their weights, which are 0
    for samples outside [-1, size], following torchvision's bilinear_interpolate.
    """
    extent = end - start
    if not aligned:
        extent = jnp.maximum(extent, 1.0)  # torchvision forces malformed RoIs to at least 1x1
    bin_size = extent / bins
    bin_index = jnp.repeat(jnp.arange(bins), sampling_ratio)
    sample_index = jnp.tile(jnp.arange(sampling_ratio), bins)
    position = (
        start[:, None]
        + bin_index[None, :] * bin_size[:, None]
        + (sample_index[None, :] + 0.5) * bin_size[:, None] / sampling_ratio
    )
    size = size[:, None]
    inside = (position >= -1.0) & (position <= size)
    position = jnp.maximum(position, 0.0)
    low = position.astype(jnp.int32)  # truncation == floor, position >= 0
    at_edge = low >= size - 1
    low = jnp.where(at_edge, size - 1, low)
    high = jnp.where(at_edge, size - 1, low + 1)
    position = jnp.where(at_edge, low.astype(position.dtype), position)
    high_weight = (position - low) * inside
    low_weight = (1.0 - (position - low)) * inside
    return low, high, low_weight, high_weight


def _gather_roi_align(
    table, boxes, scales, heights, widths, offsets, output_size, sampling_ratio, aligned, boxes_per_step
):
    """Shared core: table [N_pixels, C] flat feature rows; per-box scales/heights/widths/offsets [R]."""
    if isinstance(output_size, int):
        output_size = (output_size, output_size)
    if not (isinstance(sampling_ratio, int) and sampling_ratio > 0):
        raise ValueError(f"sampling_ratio must be a static int > 0 (adaptive -1 is unsupported), got {sampling_ratio}")
    bins_h, bins_w = output_size
    channels = table.shape[-1]
    offset = 0.5 if aligned else 0.0
    scaled = boxes * scales[:, None] - offset
    y_low, y_high, wy_low, wy_high = _axis_samples(scaled[:, 1], scaled[:, 3], heights, bins_h, sampling_ratio, aligned)
    x_low, x_high, wx_low, wx_high = _axis_samples(scaled[:, 0], scaled[:, 2], widths, bins_w, sampling_ratio, aligned)
    rows = jnp.stack([y_low, y_high], axis=-1)  # [R, Y, 2], Y = S_h * sampling_ratio
    cols = jnp.stack([x_low, x_high], axis=-1)  # [R, X, 2]
    row_weights = jnp.stack([wy_low, wy_high], axis=-1)
    col_weights = jnp.stack([wx_low, wx_high], axis=-1)

    taps = 2 * sampling_ratio  # per bin and axis: each sample's low and high neighbour

    def pool_one_box(box):
        rows, cols, row_weights, col_weights, width, offset = box
        # [Y, 2] -> [S_h, taps]: sample y = bin * sampling_ratio + s, so a bin's taps are adjacent.
        rows, row_weights = rows.reshape(bins_h, taps), row_weights.reshape(bins_h, taps)
        cols, col_weights = cols.reshape(bins_w, taps), col_weights.reshape(bins_w, taps)
        flat_index = offset + rows[:, None, :, None] * width + cols[None, :, None, :]  # [S_h, S_w, taps, taps]
        weights = row_weights[:, None, :, None] * col_weights[None, :, None, :]
        # Every bin's taps^2 corners side by side in one [S_h, S_w, taps^2, C] gather, reduced in one
        # pass: on a TPU, minor dimensions of 2 (a [.., 2, X, 2, C] layout) are padded to a tile and
        # re-laid out, which moved 3.3 GB per chip-step at 8 images for each pooling (issue 28).
        # Multiplied in the table's dtype and summed in float32: a bfloat16 table's corners are never
        # written out in float32.
        corners = table[flat_index.reshape(bins_h, bins_w, taps * taps)]
        weights = weights.reshape(bins_h, bins_w, taps * taps, 1).astype(table.dtype)
        return (corners * weights).sum(axis=2, dtype=jnp.float32)

    # A few boxes per step keep the gathered corners ([boxes_per_step, S_h, S_w, taps^2, C]) in cache;
    # gathering all boxes at once writes and re-reads hundreds of MB and is 2-5x slower on CPU.
    pooled = jax.lax.map(
        pool_one_box, (rows, cols, row_weights, col_weights, widths, offsets),
        batch_size=max(1, min(boxes_per_step, boxes.shape[0])),
    )
    return pooled / (sampling_ratio * sampling_ratio)
