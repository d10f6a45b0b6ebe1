"""Detections of one image (host numpy) -> COCO results entries with RLE masks.

Shapes: D detections, H W the image's original size.
"""

import numpy as np
from pycocotools import mask as mask_utils


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


def image_detections_to_coco(
    image_id: int,
    boxes_xyxy: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    label_to_category_id: dict,
    binary_masks: np.ndarray | None = None,
) -> list:
    """COCO results entries for the detections of one image (only the real ones: drop padding first).

    boxes_xyxy: [D,4] original-image pixels; scores: [D]; labels: [D] contiguous 1..K;
    binary_masks: [D,H,W] at the original resolution, or None for box-only results.
    """
    boxes_xywh = xyxy_to_xywh(boxes_xyxy)
    rles = encode_binary_masks(binary_masks) if binary_masks is not None else None
    entries = []
    for d in range(len(scores)):
        entry = {
            "image_id": int(image_id),
            "category_id": int(label_to_category_id[int(labels[d])]),
            "bbox": [float(v) for v in boxes_xywh[d]],
            "score": float(scores[d]),
        }
        if rles is not None:
            entry["segmentation"] = rles[d]
        entries.append(entry)
    return entries
