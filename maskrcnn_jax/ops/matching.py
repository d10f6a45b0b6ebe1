"""Matching candidates (anchors, proposals) to ground truth by IoU, for one image.

Shape legend: M GT instances (padded), N candidates.
"""

import jax.numpy as jnp

FOREGROUND = 1
BACKGROUND = 0
IGNORED = -1


def match_boxes(iou, gt_valid, foreground_threshold, background_threshold, allow_low_quality_matches):
    """torchvision `Matcher` for one image with padded GT: iou [M, N], gt_valid bool [M] -> (matched_gt, labels).

    Returns matched_gt int32 [N], each candidate's highest-IoU valid GT (ties go to the lower
    index, as torch.max; 0 when the image has no valid GT), and labels int32 [N]: 1 foreground
    (IoU >= foreground_threshold), 0 background (IoU < background_threshold), -1 ignored (in between).
    With allow_low_quality_matches, every candidate whose IoU with some GT equals that GT's highest
    IoU (ties included) is foreground too, still matched to its own highest-IoU GT (as torchvision's
    `matches[pred] = all_matches[pred]`). Padding GT never matches; with no valid GT every label is 0.

    Deliberate difference: a GT whose highest IoU is 0 adds no low-quality matches. torchvision's
    `==` would make every candidate with IoU 0 against it foreground.
    The thresholds and the flag are Python values (static under jit).
    """
    masked_iou = jnp.where(gt_valid[:, None], iou, -1.0)  # valid IoUs are >= 0, so padding never wins
    matched_gt = jnp.argmax(masked_iou, axis=0).astype(jnp.int32)
    best_iou = jnp.max(masked_iou, axis=0)
    labels = jnp.where(best_iou >= foreground_threshold, FOREGROUND, IGNORED)
    labels = jnp.where(best_iou < background_threshold, BACKGROUND, labels)
    if allow_low_quality_matches:
        highest_per_gt = jnp.max(masked_iou, axis=1, keepdims=True)
        ties_best = (masked_iou == highest_per_gt) & (highest_per_gt > 0.0) & gt_valid[:, None]
        labels = jnp.where(jnp.any(ties_best, axis=0), FOREGROUND, labels)
    labels = jnp.where(jnp.any(gt_valid), labels, BACKGROUND)
    return matched_gt, labels.astype(jnp.int32)
