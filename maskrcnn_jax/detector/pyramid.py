"""The feature pyramid seen from outside the model: anchors of a canvas, the RPN's outputs flattened
in anchor order, and RoI pooling from P2..P5. Used alike by prediction and by the training loss.

Legend: B batch, Hc Wc canvas, A anchors (all levels), R RoIs, S RoI output size, C channels.
Features are NHWC levels P2..P6 with strides 4..64; boxes are xyxy pixels of the canvas.
"""

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from maskrcnn_jax.detector.spec import DetectorSpec
from maskrcnn_jax.ops.anchors import anchor_grid
from maskrcnn_jax.ops.roi_align import multilevel_roi_align

# RoIAlign pools P2..P5 (P6 only feeds the RPN). torchvision infers each level's scale as
# 2 ** round(log2(feature side / canvas side)), which is exactly 1 / stride for canvas sides >= 78.
POOLED_STRIDES = (4, 8, 16, 32)


def pyramid_anchors(
    spec: DetectorSpec, canvas_size: tuple[int, int], feature_shapes: Sequence[tuple[int, int]]
) -> tuple[np.ndarray, list[int]]:
    """Anchors of every level concatenated, float32 numpy [A, 4] (a compile-time constant), and the
    number of anchors per level. feature_shapes: (h_l, w_l) of P2..P6, one per `spec.anchor_sizes`."""
    per_level = anchor_grid(
        tuple(canvas_size),
        [tuple(shape) for shape in feature_shapes],
        sizes=tuple((size,) for size in spec.anchor_sizes),
        aspect_ratios=spec.anchor_aspect_ratios,
    )
    return np.concatenate(per_level), [level.shape[0] for level in per_level]


def flatten_rpn_outputs(
    objectness: Sequence[jax.Array], box_deltas: Sequence[jax.Array]
) -> tuple[jax.Array, jax.Array]:
    """The RPN head's per-level outputs ([B, h_l, w_l, a] and [B, h_l, w_l, a * 4]) in anchor order:
    objectness logits [B, A] and box deltas [B, A, 4] (positions row-major, anchors minor, as `pyramid_anchors`)."""
    batch_size = objectness[0].shape[0]
    return (
        jnp.concatenate([level.reshape(batch_size, -1) for level in objectness], axis=1),
        jnp.concatenate([level.reshape(batch_size, -1, 4) for level in box_deltas], axis=1),
    )


def pool_rois(spec: DetectorSpec, features: Sequence[jax.Array], boxes: jax.Array, output_size: int) -> jax.Array:
    """RoIAlign of boxes [B, R, 4] from P2..P5 of features (each [B, h_l, w_l, C]; a P6 is ignored),
    each box from the level torchvision's MultiScaleRoIAlign picks -> [B, R, S, S, C], S = output_size."""
    pooled = list(features[: len(POOLED_STRIDES)])
    scales = tuple(1.0 / stride for stride in POOLED_STRIDES)

    def pool_image(levels, image_boxes):
        return multilevel_roi_align(levels, image_boxes, output_size, scales, spec.roi_sampling_ratio,
                                    boxes_per_step=spec.roi_boxes_per_step)

    return jax.vmap(pool_image)(pooled, boxes)
