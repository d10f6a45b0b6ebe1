"""Box-head post-processing for one image (vmap over the batch), as torchvision's RoIHeads.postprocess_detections.

Legend: P proposals, K classes including background, D detections. Boxes are xyxy pixels of the resized image.
"""

import jax
import jax.numpy as jnp
import numpy as np

from maskrcnn_jax.detector.spec import DetectorSpec
from maskrcnn_jax.ops.boxes import clip_boxes, decode_boxes, small_boxes_valid
from maskrcnn_jax.ops.nms import batched_nms


def postprocess_detections(
    class_logits: jax.Array,
    box_deltas: jax.Array,
    proposals: jax.Array,
    proposal_valid: jax.Array,
    image_size: jax.Array,
    spec: DetectorSpec,
) -> dict[str, jax.Array]:
    """Softmax, per-class decode and clip, drop background / low scores / tiny boxes / the spec's
    absent classes (slots without a class name), per-class NMS, top D.

    class_logits [P, K], box_deltas [P, K, 4], proposals [P, 4], proposal_valid bool [P],
    image_size int [2] (h, w). Thresholds, box weights and D = detections_per_image come from the
    spec. Before NMS only the `spec.max_candidates` best (box, class) pairs are kept (exactly
    torchvision whenever fewer pass the score threshold).
    Returns {"boxes": [D, 4], "scores": [D], "classes": int32 [D] (1..K-1), "valid": bool [D]},
    sorted by descending score.
    """
    num_classes = class_logits.shape[-1]
    scores = jax.nn.softmax(class_logits, axis=-1)[:, 1:]
    boxes = decode_boxes(box_deltas, proposals[:, None, :], spec.roi_box_weights)[:, 1:]
    boxes = clip_boxes(boxes, image_size[0], image_size[1])
    classes = jnp.broadcast_to(jnp.arange(1, num_classes, dtype=jnp.int32), scores.shape)
    class_present = np.ones(num_classes - 1, bool)  # a constant [K - 1], for labels 1..K-1
    class_present[np.asarray(spec.absent_classes, np.int64) - 1] = False
    valid = ((scores > spec.score_threshold) & small_boxes_valid(boxes, spec.min_box_size) & proposal_valid[:, None]
             & class_present)

    flat_scores = jnp.where(valid, scores, -1.0).reshape(-1)
    candidate_scores, candidates = jax.lax.top_k(flat_scores, min(spec.max_candidates, flat_scores.shape[0]))
    candidate_boxes = boxes.reshape(-1, 4)[candidates]
    candidate_classes = classes.reshape(-1)[candidates]
    candidate_valid = valid.reshape(-1)[candidates]

    keep, keep_valid = batched_nms(
        candidate_boxes, candidate_scores, candidate_classes, candidate_valid, spec.nms_threshold, spec.detections_per_image
    )
    return {
        "boxes": candidate_boxes[keep],
        "scores": jnp.where(keep_valid, candidate_scores[keep], 0.0),
        "classes": candidate_classes[keep],
        "valid": keep_valid,
    }
