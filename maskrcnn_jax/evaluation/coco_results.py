"""Detections of one image (host numpy) -> COCO results entries with RLE masks.

Shapes: D detections, H W the image's original size.
"""

import numpy as np
from pycocotools import mask as mask_utils

from maskrcnn_jax.detector.paste import MaskWindow


def xyxy_to_xywh(boxes_xyxy: np.ndarray) -> np.ndarray:
    """[D,4] (x1, y1, x2, y2) -> [D,4] (x, y, width, height), COCO's box format."""
    boxes_xyxy = np.asarray(boxes_xyxy, dtype=np.float64)
    return np.concatenate([boxes_xyxy[:, :2], boxes_xyxy[:, 2:] - boxes_xyxy[:, :2]], axis=1)


def encode_binary_masks(binary_masks: np.ndarray) -> list:
    """[D,H,W] bool/uint8 full-image masks -> D compressed RLE dicts {"size": [H, W], "counts": str}."""
    if len(binary_masks) == 0:
        return []
    # pycocotools encodes column-major [H,W,D] uint8 in one C call.
    rles = mask_utils.encode(np.asfortranarray(np.transpose(binary_masks, (1, 2, 0)), dtype=np.uint8))
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")  # str so the entry is json-serialisable
    return rles


def encode_mask_windows(windows: list[MaskWindow], height: int, width: int) -> list:
    """D mask windows of an [H, W] image -> D compressed RLE dicts, through one reused [H, W] buffer
    (memory: one image-sized uint8 array, whatever D)."""
    buffer = np.zeros((height, width), np.uint8, order="F")
    rles = []
    for window in windows:
        buffer[window.slices] = window.pixels
        rle = mask_utils.encode(buffer[:, :, None])[0]
        rle["counts"] = rle["counts"].decode("ascii")  # str so the entry is json-serialisable
        rles.append(rle)
        buffer[window.slices] = 0
    return rles


def image_detections_to_coco(
    image_id: int,
    boxes_xyxy: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    label_to_category_id: dict,
    segmentations: list | None = None,
) -> list:
    """COCO results entries for the detections of one image (only the real ones: drop padding first).

    boxes_xyxy: [D,4] original-image pixels; scores: [D]; labels: [D] contiguous 1..K;
    segmentations: D compressed RLE dicts at the original resolution (`encode_mask_windows`,
    `encode_binary_masks`), or None for box-only results.
    """
    boxes_xywh = xyxy_to_xywh(boxes_xyxy)
    entries = []
    for d in range(len(scores)):
        entry = {
            "image_id": int(image_id),
            "category_id": int(label_to_category_id[int(labels[d])]),
            "bbox": [float(v) for v in boxes_xywh[d]],
            "score": float(scores[d]),
        }
        if segmentations is not None:
            entry["segmentation"] = segmentations[d]
        entries.append(entry)
    return entries
