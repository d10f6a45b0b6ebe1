"""Training targets for one image (vmap over the batch): anchors and RoIs matched to the ground
truth, balanced samples drawn, box and mask targets computed. No gradients flow through here.

Legend: A anchors (all levels), M max GT instances, P proposals, N = P + M RoI candidates,
S_rpn sampled anchors, R sampled RoIs, Rm mask slots, Sm cropped GT mask side, T mask target side.
Boxes are xyxy pixels of the padded canvas.
"""

import jax
import jax.numpy as jnp

from maskrcnn_jax.detector.spec import SamplerSpec
from maskrcnn_jax.ops.boxes import box_iou, encode_boxes
from maskrcnn_jax.ops.masks import mask_targets_from_crops
from maskrcnn_jax.ops.matching import IGNORED, match_boxes
from maskrcnn_jax.ops.sampling import sample_balanced


def _matched_box_targets(gt_boxes, matched_gt, boxes, positive, box_weights):
    """Deltas from `boxes` to their matched GT, zero where not positive (a background box may be
    matched to a padding or empty GT, whose log-size delta is -inf)."""
    deltas = encode_boxes(gt_boxes[matched_gt], boxes, box_weights)
    return jnp.where(positive[:, None], deltas, 0.0)


def rpn_targets(anchors, gt_boxes, gt_valid, image_size, key, sampler: SamplerSpec, box_weights) -> dict:
    """Anchors matched to the GT (torchvision RPN: 0.7 / 0.3 with low-quality matches) and sampled.

    anchors [A, 4]; gt_boxes [M, 4]; gt_valid bool [M]; image_size int32 [2] (h, w) of the photo on
    its canvas; key: the sampling key. An anchor whose centre lies outside the photo (in the canvas's
    zero padding) is neither positive nor negative, nor any GT's low-quality match: a padded canvas
    then samples like torchvision's batch padded only to its largest image (docs/training_targets.md).
    Returns {"index": int32 [S_rpn] sampled anchors, "positive": bool [S_rpn], "valid": bool [S_rpn],
    "box_targets": [S_rpn, 4] (zero except for positives)}.
    """
    anchors = jnp.asarray(anchors)
    matched_gt, labels = rpn_labels(anchors, gt_boxes, gt_valid, image_size, sampler)
    index, positive, valid = sample_balanced(key, labels, sampler.batch_size_per_image, sampler.positive_fraction)
    positive = positive & valid
    box_targets = _matched_box_targets(gt_boxes, matched_gt[index], anchors[index], positive, box_weights)
    return {"index": index, "positive": positive, "valid": valid, "box_targets": box_targets}


def rpn_labels(anchors, gt_boxes, gt_valid, image_size, sampler: SamplerSpec) -> tuple[jax.Array, jax.Array]:
    """Every anchor's match before sampling: anchors [A, 4], gt_boxes [M, 4], gt_valid bool [M],
    image_size [2] (h, w) -> (matched GT int32 [A], label int32 [A]: 1 foreground, 0 background,
    -1 ignored, which every anchor centred outside the photo is)."""
    inside = anchors_inside(anchors, image_size)
    iou = jnp.where(inside[None, :], box_iou(gt_boxes, anchors), -1.0)
    matched_gt, labels = match_boxes(iou, gt_valid, sampler.foreground_iou, sampler.background_iou,
                                     sampler.allow_low_quality_matches)
    return matched_gt, jnp.where(inside, labels, IGNORED)


def anchors_inside(anchors, image_size) -> jax.Array:
    """Whether each anchor's centre lies on the photo: anchors [A, 4], image_size [2] (h, w) -> bool [A]."""
    center_x = (anchors[:, 0] + anchors[:, 2]) / 2
    center_y = (anchors[:, 1] + anchors[:, 3]) / 2
    height, width = image_size[0], image_size[1]
    return (center_x >= 0) & (center_x < width) & (center_y >= 0) & (center_y < height)


def roi_targets(proposals, proposal_valid, gt_boxes, gt_classes, gt_valid, key, sampler: SamplerSpec,
                box_weights) -> dict:
    """GT boxes appended to the proposals (as torchvision), matched (0.5 / 0.5, no low-quality
    matches), and R = sampler.batch_size_per_image RoIs sampled, positives in the first slots.

    proposals [P, 4] (no gradient); proposal_valid bool [P]; gt_boxes [M, 4]; gt_classes int32 [M]
    (1..K-1); gt_valid bool [M]. Returns {"boxes": [R, 4], "valid": bool [R], "positive": bool [R],
    "classes": int32 [R] (0 for background and padding), "matched_gt": int32 [R], "box_targets":
    [R, 4] (zero except for positives), "iou": [R] IoU with the matched GT, "index": int32 [R]
    candidate index (proposal p is p, GT m is P + m)}.
    """
    candidates = jnp.concatenate([proposals, gt_boxes])
    matched_gt, labels, iou = roi_labels(proposals, proposal_valid, gt_boxes, gt_valid, sampler)
    index, positive, valid = sample_balanced(key, labels, sampler.batch_size_per_image, sampler.positive_fraction)
    positive = positive & valid
    boxes = candidates[index]
    matched = matched_gt[index]
    return {
        "boxes": boxes,
        "valid": valid,
        "positive": positive,
        "classes": jnp.where(positive, gt_classes[matched], 0),
        "matched_gt": matched,
        "box_targets": _matched_box_targets(gt_boxes, matched, boxes, positive, box_weights),
        "iou": jnp.where(valid, jnp.max(iou, axis=0)[index], 0.0),
        "index": index,
    }


def roi_labels(proposals, proposal_valid, gt_boxes, gt_valid, sampler: SamplerSpec):
    """Every RoI candidate's match before sampling: the proposals [P, 4] (valid bool [P]) with the GT
    boxes [M, 4] (valid bool [M]) appended, N = P + M. Returns (matched GT int32 [N], label int32 [N]:
    1 foreground, 0 background, -1 ignored or padding, IoU [M, N] of each GT with each candidate)."""
    candidates = jnp.concatenate([proposals, gt_boxes])
    iou = box_iou(gt_boxes, candidates)
    matched_gt, labels = match_boxes(iou, gt_valid, sampler.foreground_iou, sampler.background_iou,
                                     sampler.allow_low_quality_matches)
    return matched_gt, jnp.where(jnp.concatenate([proposal_valid, gt_valid]), labels, IGNORED), iou


def mask_slots(rois: dict, num_slots: int) -> dict:
    """The first `num_slots` sampled RoIs, where `roi_targets` puts its positives: the mask branch's
    inputs. Returns {"boxes": [Rm, 4], "valid": bool [Rm] (positive RoIs), "classes": int32 [Rm],
    "matched_gt": int32 [Rm]}. Positives beyond num_slots (only when num_slots is below
    batch_size_per_image x positive_fraction) get no mask loss."""
    return {
        "boxes": rois["boxes"][:num_slots],
        "valid": rois["positive"][:num_slots],
        "classes": rois["classes"][:num_slots],
        "matched_gt": rois["matched_gt"][:num_slots],
    }


def crop_mask_targets(gt_masks, gt_boxes, slots: dict, target_size: int):
    """Soft mask targets [Rm, T, T] in [0, 1] from the pipeline's box-cropped GT masks.

    gt_masks uint8 [M, Sm, Sm] (each GT mask cropped to its box), gt_boxes [M, 4]; each slot's RoI
    region of its matched GT's crop is resampled (zero outside the GT box). Padding slots give
    arbitrary values; the loss masks them.
    """
    matched = slots["matched_gt"]
    targets = mask_targets_from_crops(gt_masks[matched], gt_boxes[matched], slots["boxes"], target_size)
    return jax.lax.stop_gradient(targets)
