"""Box geometry for one image: areas, IoU, clipping, size filtering and box coding.

Boxes are xyxy in absolute pixels. Shape legend: N, M box counts.
"""

import math

import jax.numpy as jnp

DEFAULT_SCALE_CLAMP = math.log(1000.0 / 16)


def box_area(boxes):
    """Area of xyxy boxes: [..., 4] -> [...]."""
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def box_iou(boxes1, boxes2):
    """Pairwise IoU, torchvision.ops.box_iou semantics: [N, 4], [M, 4] -> [N, M].

    Where the union is 0 (two zero-area boxes) the IoU is 0, not torchvision's NaN, so that
    padded or degenerate boxes never suppress or match anything.
    """
    area1 = box_area(boxes1)
    area2 = box_area(boxes2)
    # x and y apart, not as a trailing pair: XLA then fuses the [N, M] IoU in one pass instead of
    # writing out an [N, M, 2] overlap (1.45 GB per TPU chip-step for the RPN's anchors at 4 images).
    def overlap(low, high):
        return jnp.clip(jnp.minimum(boxes1[:, None, high], boxes2[None, :, high])
                        - jnp.maximum(boxes1[:, None, low], boxes2[None, :, low]), min=0)

    intersection = overlap(0, 2) * overlap(1, 3)
    union = area1[:, None] + area2[None, :] - intersection
    safe_union = jnp.where(union > 0, union, 1.0)
    return jnp.where(union > 0, intersection / safe_union, 0.0)


def clip_boxes(boxes, height, width):
    """Clamp xyxy boxes into [0, width] x [0, height]: [..., 4] -> [..., 4].

    height and width may be Python numbers or traced scalars (each image's true size).
    """
    x = jnp.clip(boxes[..., 0::2], 0, width)
    y = jnp.clip(boxes[..., 1::2], 0, height)
    return jnp.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], axis=-1)


def small_boxes_valid(boxes, min_size):
    """True where both sides are >= min_size (torchvision remove_small_boxes keeps these): [..., 4] -> bool [...]."""
    widths = boxes[..., 2] - boxes[..., 0]
    heights = boxes[..., 3] - boxes[..., 1]
    return (widths >= min_size) & (heights >= min_size)


def _centres_and_sizes(boxes):
    widths = boxes[..., 2] - boxes[..., 0]
    heights = boxes[..., 3] - boxes[..., 1]
    centre_x = boxes[..., 0] + 0.5 * widths
    centre_y = boxes[..., 1] + 0.5 * heights
    return centre_x, centre_y, widths, heights


def encode_boxes(target_boxes, reference_boxes, weights):
    """Regression deltas taking reference boxes to targets (torchvision BoxCoder.encode_single, no +1).

    target_boxes [N, 4], reference_boxes [N, 4], weights (wx, wy, ww, wh) -> deltas [N, 4]
    (any leading shape that broadcasts works too).
    """
    weight_x, weight_y, weight_w, weight_h = weights
    ref_x, ref_y, ref_w, ref_h = _centres_and_sizes(reference_boxes)
    target_x, target_y, target_w, target_h = _centres_and_sizes(target_boxes)
    dx = weight_x * (target_x - ref_x) / ref_w
    dy = weight_y * (target_y - ref_y) / ref_h
    dw = weight_w * jnp.log(target_w / ref_w)
    dh = weight_h * jnp.log(target_h / ref_h)
    return jnp.stack([dx, dy, dw, dh], axis=-1)


def decode_boxes(deltas, reference_boxes, weights, scale_clamp=DEFAULT_SCALE_CLAMP):
    """Apply regression deltas to reference boxes (torchvision BoxCoder.decode_single).

    deltas [N, 4], reference_boxes [N, 4], weights (wx, wy, ww, wh) -> boxes [N, 4]. Leading
    shapes broadcast, e.g. per-class deltas [R, K, 4] with reference_boxes [R, 1, 4] -> [R, K, 4].
    dw and dh are clamped at scale_clamp so exp() cannot overflow.
    """
    weight_x, weight_y, weight_w, weight_h = weights
    ref_x, ref_y, ref_w, ref_h = _centres_and_sizes(reference_boxes)
    dx = deltas[..., 0] / weight_x
    dy = deltas[..., 1] / weight_y
    dw = jnp.minimum(deltas[..., 2] / weight_w, scale_clamp)
    dh = jnp.minimum(deltas[..., 3] / weight_h, scale_clamp)
    centre_x = dx * ref_w + ref_x
    centre_y = dy * ref_h + ref_y
    half_w = 0.5 * jnp.exp(dw) * ref_w
    half_h = 0.5 * jnp.exp(dh) * ref_h
    return jnp.stack([centre_x - half_w, centre_y - half_h, centre_x + half_w, centre_y + half_h], axis=-1)
