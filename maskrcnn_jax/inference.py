"""Jitted Mask R-CNN prediction: padded image batch in, fixed-shape detections out.

Legend: B batch, Hc Wc canvas, A anchors, P proposals, D detections, K classes, S RoI size, C channels.
"""

import functools
import math
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from maskrcnn_jax.models import MaskRCNN
from maskrcnn_jax.ops.anchors import anchor_grid
from maskrcnn_jax.ops.roi_align import multilevel_roi_align
from maskrcnn_jax.postprocess import postprocess_detections
from maskrcnn_jax.proposals import generate_proposals

POOLED_LEVELS = 4  # RoIAlign pools P2..P5; P6 only feeds the RPN.


def pyramid_spatial_scales(canvas_size: tuple[int, int], feature_sizes: list[tuple[int, int]]) -> tuple[float, ...]:
    """torchvision MultiScaleRoIAlign's scales: 2 ** round(log2(feature height / image height)) per level."""
    return tuple(2.0 ** round(math.log2(height / canvas_size[0])) for height, _ in feature_sizes)


def pyramid_anchors(config: ml_collections.ConfigDict, canvas_size, features) -> tuple[np.ndarray, list[int]]:
    """Anchors of all levels concatenated [A, 4] (compile-time constant) and the count per level."""
    per_level = anchor_grid(
        canvas_size,
        [feature.shape[1:3] for feature in features],
        sizes=tuple((size,) for size in config.model.anchor_sizes),
        aspect_ratios=tuple(config.model.anchor_aspect_ratios),
    )
    return np.concatenate(per_level), [level.shape[0] for level in per_level]


def run_model(model: MaskRCNN, config: ml_collections.ConfigDict, params, images, image_sizes, original_sizes):
    """The whole prediction path as one pure function; returns (detections, intermediates).

    Arguments and detections as `make_predict_fn`'s predict. intermediates: {"features": list of
    [B, H_l, W_l, C] (P2..P6), "proposals": [B, P, 4] resized-image pixels, "proposal_scores": [B, P],
    "proposal_valid": bool [B, P]}, for inspection and parity tests (jit drops them when unused).
    """
    test = config.test
    variables = {"params": params}
    batch_size = images.shape[0]
    canvas_size = images.shape[1:3]
    features = model.apply(variables, images, method=MaskRCNN.features)
    objectness, box_deltas = model.apply(variables, features, method=MaskRCNN.rpn)

    anchors, level_sizes = pyramid_anchors(config, canvas_size, features)
    propose = functools.partial(
        generate_proposals,
        anchors=anchors,
        level_sizes=level_sizes,
        pre_nms_top_n=test.rpn_pre_nms_top_n,
        post_nms_top_n=test.rpn_post_nms_top_n,
        nms_threshold=test.rpn_nms_threshold,
        min_size=test.rpn_min_size,
        box_weights=tuple(config.model.rpn_box_weights),
    )
    proposals, proposal_scores, proposal_valid = jax.vmap(lambda o, d, s: propose(o, d, image_size=s))(
        jnp.concatenate([level.reshape(batch_size, -1) for level in objectness], axis=1),
        jnp.concatenate([level.reshape(batch_size, -1, 4) for level in box_deltas], axis=1),
        image_sizes,
    )

    pooled = features[:POOLED_LEVELS]
    scales = pyramid_spatial_scales(canvas_size, [level.shape[1:3] for level in pooled])

    def pool(boxes, output_size):
        align = functools.partial(
            multilevel_roi_align,
            output_size=output_size,
            spatial_scales=scales,
            sampling_ratio=config.model.roi_sampling_ratio,
        )
        return jax.vmap(lambda levels, image_boxes: align(levels, image_boxes))(pooled, boxes)

    class_logits, class_box_deltas = model.apply(variables, pool(proposals, config.model.box_roi_size), method=MaskRCNN.box_head)
    detections = jax.vmap(
        functools.partial(
            postprocess_detections,
            score_threshold=test.score_threshold,
            min_box_size=test.min_box_size,
            nms_threshold=test.nms_threshold,
            detections_per_image=test.detections_per_image,
            max_candidates=test.max_candidates,
            box_weights=tuple(config.model.roi_box_weights),
        )
    )(class_logits, class_box_deltas, proposals, proposal_valid, image_sizes)

    mask_logits = model.apply(variables, pool(detections["boxes"], config.model.mask_roi_size), method=MaskRCNN.mask_head)
    class_mask_logits = jnp.take_along_axis(mask_logits, detections["classes"][:, :, None, None, None], axis=-1)[..., 0]
    valid = detections["valid"]
    # torchvision's transform.postprocess: per-dimension ratio original / resized.
    ratios = original_sizes.astype(jnp.float32) / image_sizes.astype(jnp.float32)
    box_scale = jnp.stack([ratios[:, 1], ratios[:, 0], ratios[:, 1], ratios[:, 0]], axis=-1)[:, None, :]
    outputs = {
        "boxes": jnp.where(valid[..., None], detections["boxes"] * box_scale, 0.0),
        "scores": detections["scores"],
        "classes": jnp.where(valid, detections["classes"], 0),
        "masks": jnp.where(valid[..., None, None], jax.nn.sigmoid(class_mask_logits), 0.0),
        "valid": valid,
    }
    intermediates = {
        "features": features,
        "proposals": proposals,
        "proposal_scores": proposal_scores,
        "proposal_valid": proposal_valid,
    }
    return outputs, intermediates


def make_predict_fn(model: MaskRCNN, config: ml_collections.ConfigDict) -> Callable[..., dict[str, jax.Array]]:
    """Returns jitted `predict(params, images, image_sizes, original_sizes)`.

    images float32 [B, Hc, Wc, 3] normalised and zero-padded; image_sizes int32 [B, 2] resized (h, w)
    before padding; original_sizes int32 [B, 2]. Returns {"boxes": [B, D, 4] xyxy original-image
    pixels, "scores": [B, D], "classes": int32 [B, D] (1..K-1), "masks": float32 [B, D, 28, 28]
    probabilities of the predicted class, "valid": bool [B, D]}; D = config.test.detections_per_image.
    Compiles once per canvas size (and batch size).
    """

    def predict(params, images, image_sizes, original_sizes):
        return run_model(model, config, params, images, image_sizes, original_sizes)[0]

    return jax.jit(predict)
