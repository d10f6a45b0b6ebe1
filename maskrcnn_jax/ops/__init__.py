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
from maskrcnn_jax.ops.masks import mask_targets_from_crops, paste_masks_in_image
from maskrcnn_jax.ops.matching import match_boxes
from maskrcnn_jax.ops.nms import batched_nms, nms
from maskrcnn_jax.ops.roi_align import multilevel_roi_align, roi_align, roi_levels
from maskrcnn_jax.ops.sampling import sample_balanced

__all__ = [
    "anchor_grid",
    "batched_nms",
    "box_area",
    "box_iou",
    "clip_boxes",
    "decode_boxes",
    "encode_boxes",
    "mask_targets_from_crops",
    "match_boxes",
    "multilevel_roi_align",
    "nms",
    "paste_masks_in_image",
    "roi_align",
    "roi_levels",
    "sample_balanced",
    "small_boxes_valid",
]
