"""RPN proposals for one image (vmap over the batch), as torchvision's RegionProposalNetwork.

Legend: A anchors (all levels), P proposals. Boxes are xyxy pixels of the resized image.
"""

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from maskrcnn_jax.detector.spec import ProposalSpec
from maskrcnn_jax.ops.boxes import clip_boxes, decode_boxes, small_boxes_valid
from maskrcnn_jax.ops.nms import batched_nms


def generate_proposals(
    objectness: jax.Array,
    box_deltas: jax.Array,
    anchors: np.ndarray,
    level_sizes: Sequence[int],
    image_size: jax.Array,
    proposal_spec: ProposalSpec,
    box_weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per-level top-n on objectness, decode, clip, drop tiny boxes, NMS per level, keep the best.

    objectness [A] logits and box_deltas [A, 4] of all levels in anchor order (`flatten_rpn_outputs`);
    anchors [A, 4] and level_sizes (anchors per level) from `pyramid_anchors`; image_size int [2]
    (h, w) of the resized image before padding (boxes are clipped to it). proposal_spec: the
    caller's choice, the spec's `test_proposals` or `train_proposals`. The caller stops gradients
    for training, as torchvision detaches the proposals.
    Returns boxes [P, 4], scores [P] (sigmoid probabilities, descending), valid bool [P];
    P = proposal_spec.post_nms_top_n.
    """
    boxes, logits, levels = [], [], []
    start = 0
    for level, size in enumerate(level_sizes):
        top_logits, top_index = jax.lax.top_k(objectness[start : start + size], min(proposal_spec.pre_nms_top_n, size))
        top_index = top_index + start
        boxes.append(decode_boxes(box_deltas[top_index], jnp.asarray(anchors)[top_index], box_weights))
        logits.append(top_logits)
        levels.append(jnp.full(top_index.shape, level, jnp.int32))
        start += size
    boxes = clip_boxes(jnp.concatenate(boxes), image_size[0], image_size[1])
    scores = jax.nn.sigmoid(jnp.concatenate(logits))
    levels = jnp.concatenate(levels)
    # torchvision's RPN score_thresh is 0.0, which every sigmoid passes.
    valid = small_boxes_valid(boxes, proposal_spec.min_size)
    keep, keep_valid = batched_nms(
        boxes, scores, levels, valid, proposal_spec.nms_threshold, proposal_spec.post_nms_top_n
    )
    return boxes[keep], scores[keep], keep_valid
