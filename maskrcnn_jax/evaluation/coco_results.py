"""Detections of one image (host numpy) -> COCO results entries with RLE masks.

Shapes: D detections, H W the image's original size.
"""

import time

import numpy as np
from pycocotools import mask as mask_utils

from maskrcnn_jax.inference.mask_windows import MaskWindow, paste_mask_windows


def xyxy_to_xywh(boxes_xyxy: np.ndarray) -> np.ndarray:
    """[D,4] (x1, y1, x2, y2) -> [D,4] (x, y, width, height), COCO's box format."""
    boxes_xyxy = np.asarray(boxes_xyxy, dtype=np.float64)
    return np.concatenate([boxes_xyxy[:, :2], boxes_xyxy[:, 2:] - boxes_xyxy[:, :2]], axis=1)


def encode_mask_windows(windows: list[MaskWindow], height: int, width: int) -> list:
    """D mask windows of an [H, W] image -> D compressed RLE dicts, pycocotools' encoding of the full
    masks, computed from the windows alone (memory and time: the windows' area, not D x H x W).

    COCO's RLE runs down each column (column-major), starting with a run of zeros. A window's
    column x holds the image's column left + x between rows top and top + h, zeros elsewhere; so the
    mask changes value exactly where its window's columns, padded with a zero above and below,
    change value. Those positions, in image pixels, are the run boundaries; pycocotools' C code
    compresses the run lengths (frPyObjects of uncompressed RLE).
    """
    if not windows:
        return []
    shapes = np.array([window.pixels.shape for window in windows], np.int64).reshape(-1, 2)
    heights, widths = shapes[:, 0], shapes[:, 1]
    sizes = widths * (heights + 2)
    starts = np.cumsum(sizes) - sizes
    # Every window's columns one after the other, each padded with one False above and below, so no
    # change is seen between two columns or two windows.
    columns = np.zeros(int(sizes.sum()), bool)
    for window, start, size, window_height in zip(windows, starts, sizes, heights):
        columns[start:start + size].reshape(-1, window_height + 2)[:, 1:-1] = window.pixels.T
    changed = np.flatnonzero(columns[1:] != columns[:-1]) + 1  # the first element of each new run
    owner = np.searchsorted(starts, changed, side="right") - 1
    column, row = np.divmod(changed - starts[owner], heights[owner] + 2)
    tops = np.array([window.top for window in windows], np.int64)
    lefts = np.array([window.left for window in windows], np.int64)
    boundaries = (lefts[owner] + column) * height + tops[owner] + row - 1
    # A run ending at the bottom of one column and one starting at the top of the next are one run;
    # a run ending at the image's last pixel has no boundary after it.
    same = (boundaries[1:] == boundaries[:-1]) & (owner[1:] == owner[:-1])
    keep = (boundaries < height * width) & ~np.append(same, False) & ~np.insert(same, 0, False)
    boundaries, owner = boundaries[keep], owner[keep]
    pieces = np.split(boundaries, np.searchsorted(owner, np.arange(1, len(windows))))
    uncompressed = [{"size": [height, width], "counts": np.diff(piece, prepend=0, append=height * width)}
                    for piece in pieces]
    rles = mask_utils.frPyObjects(uncompressed, height, width)
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")  # str so the entry is json-serialisable
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
    segmentations: D compressed RLE dicts at the original resolution (`encode_mask_windows`), or
    None for box-only results.
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


def image_results(image_id: int, height: int, width: int, detections: dict, label_to_category_id: dict,
                  with_masks: bool = True) -> tuple[list, float, float]:
    """COCO results entries of one image's kept detections, with the seconds spent pasting and
    encoding: (entries, paste seconds, RLE seconds). Plain picklable values in and out, so it runs in
    worker processes too (`evaluation.host_workers`).

    detections: {"boxes": [D, 4] xyxy original pixels, "scores": [D], "classes": [D] labels,
    "masks": [D, S, S] probabilities} of the detections to keep; height, width: the original image's.
    with_masks: also paste (thresholded at 0.5) and RLE-encode each mask for `segm`.
    """
    start = time.perf_counter()
    windows = paste_mask_windows(detections["masks"], detections["boxes"], height, width) if with_masks else None
    pasted = time.perf_counter()
    segmentations = encode_mask_windows(windows, height, width) if with_masks else None
    entries = image_detections_to_coco(image_id, detections["boxes"], detections["scores"], detections["classes"],
                                       label_to_category_id, segmentations)
    return entries, pasted - start, time.perf_counter() - pasted
