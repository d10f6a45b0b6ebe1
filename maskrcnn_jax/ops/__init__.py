"""Pure, fixed-shape geometry ops for one image (vmap them over a batch)."""

from maskrcnn_jax.ops.anchors import anchor_grid
from maskrcnn_jax.ops.boxes import (
    box_area,
    box_iou,
    clip_boxes,
    decode_boxes,
    encode_boxes,
    small_boxes_valid,
)

__all__ = [
    "anchor_grid",
    "box_area",
    "box_iou",
    "clip_boxes",
    "decode_boxes",
    "encode_boxes",
    "small_boxes_valid",
]
