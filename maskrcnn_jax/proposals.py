"""RPN proposal generation for one image (vmap over the batch), as torchvision's RegionProposalNetwork at test time.

Legend: A anchors (all levels), P proposals. Boxes are xyxy pixels of the resized image.
"""

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from maskrcnn_jax.ops.boxes import clip_boxes, decode_boxes, small_boxes_valid
from maskrcnn_jax.ops.nms import batched_nms


def generate_proposals(
    objectness: jax.Array,
    box_deltas: jax.Array,
    anchors: np.ndarray,
    level_sizes: Sequence[int],
    image_size: jax.Array,
    pre_nms_top_n: int,
    post_nms_top_n: int,
    nms_threshold: float,
    min_size: float,
    box_weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per-level top-k on objectness, decode, clip, drop tiny boxes, NMS per level, keep the best.

    objectness [A] logits and box_deltas [A, 4] for all levels concatenated in anchor order;
    anchors [A, 4] (compile-time numpy); level_sizes: anchors per level (static); image_size
    int [2] (h, w) of the resized image before padding (boxes are clipped to it).
    Returns boxes [P, 4], scores [P] (sigmoid probabilities, descending), valid bool [P], P = post_nms_top_n.
    """
    boxes, logits, levels = [], [], []
    start = 0
    for level, size in enumerate(level_sizes):
        top_logits, top_index = jax.lax.top_k(objectness[start : start + size], min(pre_nms_top_n, size))
        top_index = top_index + start
        boxes.append(decode_boxes(box_deltas[top_index], jnp.asarray(anchors)[top_index], box_weights))
        logits.append(top_logits)
        levels.append(jnp.full(top_index.shape, level, jnp.int32))
        start += size
    boxes = clip_boxes(jnp.concatenate(boxes), image_size[0], image_size[1])
    scores = jax.nn.sigmoid(jnp.concatenate(logits))
    levels = jnp.concatenate(levels)
    # torchvision's score_thresh is 0.0 at test time, which every sigmoid passes.
    valid = small_boxes_valid(boxes, min_size)
    keep, keep_valid = batched_nms(boxes, scores, levels, valid, nms_threshold, post_nms_top_n)
    return boxes[keep], scores[keep], keep_valid
