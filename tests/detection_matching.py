"""Matching our detections to a reference's, for the parity tests against torchvision."""

import numpy as np

from maskrcnn_jax.detector import make_binary_mask_paster

# Boxes per image that two implementations may keep differently on near-ties (issue 26). Float32
# rounding, which differs between frameworks and between CPU kinds (other kernels, other summation
# orders), moves a score or an IoU by ~1e-6: a box whose score ties the score threshold, the
# per-level top-n or the detections-per-image cut, or whose IoU with a better box ties NMS's
# threshold, can be kept by one and dropped by the other, and which way depends on the machine. A
# real bug (a wrong decode, clip, class offset, threshold, top-n or NMS) changes many boxes, not two.
NEAR_TIES = 2


def allowed_differences(count: int) -> int:
    """Detections of an image with `count` reference detections that may be missing or extra: 1% of
    them, but at least NEAR_TIES (under 100 detections 1% would demand identical near-tie outcomes)."""
    return max(NEAR_TIES, int(0.01 * count))


def iou_matrix(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """numpy box IoU [N, 4] x [M, 4] -> [N, M]."""
    top_left = np.maximum(boxes_a[:, None, :2], boxes_b[None, :, :2])
    bottom_right = np.minimum(boxes_a[:, None, 2:], boxes_b[None, :, 2:])
    intersection = np.prod(np.clip(bottom_right - top_left, 0, None), axis=-1)
    area_a = np.prod(boxes_a[:, 2:] - boxes_a[:, :2], axis=-1)
    area_b = np.prod(boxes_b[:, 2:] - boxes_b[:, :2], axis=-1)
    return intersection / (area_a[:, None] + area_b[None, :] - intersection)


def match_detections(theirs: dict, mine: dict) -> np.ndarray:
    """For each torchvision detection, the index of our same-class detection with the highest IoU >= 0.99, or -1.

    theirs: {"boxes" [N, 4], "labels" [N]}; mine: {"boxes" [M, 4], "classes" [M]} -> [N] int.
    """
    ious = iou_matrix(theirs["boxes"], mine["boxes"])
    ious[theirs["labels"][:, None] != mine["classes"][None, :]] = 0
    best = ious.argmax(axis=1)
    return np.where(ious[np.arange(len(best)), best] >= 0.99, best, -1)


def our_detections(predictions: dict, b: int) -> dict:
    """The valid detections of image b of our batched prediction ({"boxes", "scores", "classes", "masks"})."""
    valid = predictions["valid"][b]
    return {key: predictions[key][b][valid] for key in ("boxes", "scores", "classes", "masks")}


def matched_pairs(torch_detections: list[dict], ours: dict):
    """Per image b: (theirs, mine, found, match): torchvision's detections, our valid ones, and for
    each of theirs whether a match exists (found [N] bool) and its index among ours (match [N])."""
    for b, theirs in enumerate(torch_detections):
        mine = our_detections(ours, b)
        match = match_detections(theirs, mine)
        yield theirs, mine, match >= 0, match


def pasted_mask_overlap(mine: dict, chosen: np.ndarray, reference_masks: np.ndarray, image_shape) -> tuple:
    """Our masks of the detections `chosen` pasted into the image (H, W) against the reference's
    binary masks [P, H, W]: (intersection [P], union [P]) pixel counts."""
    paste = make_binary_mask_paster(*image_shape[:2])
    pasted = np.asarray(paste(mine["masks"][chosen][None], mine["boxes"][chosen][None]))[0]
    return (pasted & reference_masks).sum(axis=(1, 2)), (pasted | reference_masks).sum(axis=(1, 2))
