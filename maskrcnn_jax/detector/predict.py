"""Mask R-CNN prediction as one pure function: a padded batch in, fixed-shape detections out.

The batch is the data pipeline's schema, produced for single images by `maskrcnn_jax.inference.preprocess`:
{"image": uint8 [B, Hc, Wc, 3] resized photos zero-padded (normalised here,
`inputs.model_images`) or float32 normalised on the host, "image_size": int32 [B, 2] resized
(h, w) before padding, "original_size": int32 [B, 2] (H, W)}; other keys are ignored.

Legend: B batch, Hc Wc canvas, P proposals, D detections, K classes, C channels.
"""

import functools
from typing import Callable

import jax
import jax.numpy as jnp

from maskrcnn_jax.detector.inputs import model_images
from maskrcnn_jax.detector.postprocess import postprocess_detections
from maskrcnn_jax.detector.proposals import generate_proposals
from maskrcnn_jax.detector.pyramid import flatten_rpn_outputs, pool_rois, pyramid_anchors
from maskrcnn_jax.detector.spec import DetectorSpec

BATCH_KEYS = ("image", "image_size", "original_size")


def propose(model, spec: DetectorSpec, params, features: list, canvas_size: tuple[int, int],
            image_sizes: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """RPN head and test-time proposals: features (P2..P6, each [B, h_l, w_l, C]), canvas (Hc, Wc),
    image_sizes int32 [B, 2] -> (proposals [B, P, 4] resized-image pixels, scores [B, P], valid bool [B, P])."""
    objectness, box_deltas = flatten_rpn_outputs(*model.apply({"params": params}, features, method="rpn"))
    anchors, level_sizes = pyramid_anchors(spec, canvas_size, [level.shape[1:3] for level in features])
    propose_one = functools.partial(
        generate_proposals,
        anchors=anchors,
        level_sizes=level_sizes,
        proposal_spec=spec.test_proposals,
        box_weights=spec.rpn_box_weights,
    )
    return jax.vmap(lambda o, d, s: propose_one(o, d, image_size=s))(objectness, box_deltas, image_sizes)


def detect(model, spec: DetectorSpec, params, features: list, proposals: jax.Array, proposal_valid: jax.Array,
           image_sizes: jax.Array) -> tuple[dict, jax.Array]:
    """RoI heads: box head on the proposals, post-processing (per-class NMS, top D), mask head on the detections.

    features as `propose`'s, proposals [B, P, 4], proposal_valid bool [B, P], image_sizes int32 [B, 2]
    -> (postprocess_detections' dict batched: "boxes" [B, D, 4] resized-image pixels, "scores",
    "classes", "valid" [B, D]; mask logits of each detection's class [B, D, 2S, 2S]).
    """
    variables = {"params": params}
    class_logits, class_box_deltas = model.apply(
        variables, pool_rois(spec, features, proposals, spec.box_roi_size), method="box_head"
    )
    detections = jax.vmap(functools.partial(postprocess_detections, spec=spec))(
        class_logits, class_box_deltas, proposals, proposal_valid, image_sizes
    )
    mask_logits = model.apply(variables, pool_rois(spec, features, detections["boxes"], spec.mask_roi_size), method="mask_head")
    class_mask_logits = jnp.take_along_axis(mask_logits, detections["classes"][:, :, None, None, None], axis=-1)[..., 0]
    return detections, class_mask_logits


def detection_outputs(detections: dict, class_mask_logits: jax.Array, image_sizes: jax.Array,
                      original_sizes: jax.Array) -> dict[str, jax.Array]:
    """`predict`'s outputs from `detect`'s: boxes scaled to the original image, mask probabilities,
    padding slots zeroed. image_sizes, original_sizes int32 [B, 2] (h, w)."""
    valid = detections["valid"]
    # torchvision's transform.postprocess: per-dimension ratio original / resized.
    ratios = original_sizes.astype(jnp.float32) / image_sizes.astype(jnp.float32)
    box_scale = jnp.stack([ratios[:, 1], ratios[:, 0], ratios[:, 1], ratios[:, 0]], axis=-1)[:, None, :]
    return {
        "boxes": jnp.where(valid[..., None], detections["boxes"] * box_scale, 0.0),
        "scores": detections["scores"],
        "classes": jnp.where(valid, detections["classes"], 0),
        "masks": jnp.where(valid[..., None, None], jax.nn.sigmoid(class_mask_logits), 0.0),
        "valid": valid,
    }


def predict_with_intermediates(model, spec: DetectorSpec, params, batch: dict) -> tuple[dict, dict]:
    """`predict`'s detections and the intermediates {"features": list of [B, h_l, w_l, C] (P2..P6),
    "proposals": [B, P, 4] resized-image pixels, "proposal_scores": [B, P], "proposal_valid": bool
    [B, P]}, for inspection and parity tests (jit drops them when unused).

    model: the Flax MaskRCNN whose pieces are applied by name (the detector never imports Flax).
    The stages (features, `propose`, `detect`, `detection_outputs`) are separate functions so that
    benchmarks/benchmark.py can time each one.
    """
    images, image_sizes = model_images(batch), batch["image_size"]
    features = model.apply({"params": params}, images, method="features")
    proposals, proposal_scores, proposal_valid = propose(model, spec, params, features, images.shape[1:3], image_sizes)
    detections, class_mask_logits = detect(model, spec, params, features, proposals, proposal_valid, image_sizes)
    outputs = detection_outputs(detections, class_mask_logits, image_sizes, batch["original_size"])
    intermediates = {
        "features": features,
        "proposals": proposals,
        "proposal_scores": proposal_scores,
        "proposal_valid": proposal_valid,
    }
    return outputs, intermediates


def predict(model, spec: DetectorSpec, params, batch: dict) -> dict[str, jax.Array]:
    """Detections of a batch (the module docstring's schema), in fixed shapes.

    Returns {"boxes": [B, D, 4] xyxy original-image pixels, "scores": [B, D], "classes": int32
    [B, D] (1..K-1), "masks": float32 [B, D, 2S, 2S] probabilities of the predicted class, "valid":
    bool [B, D]}, sorted by descending score; D = spec.detections_per_image. Padding slots are 0.
    """
    return predict_with_intermediates(model, spec, params, batch)[0]


def make_predict_fn(model, spec: DetectorSpec) -> Callable[[dict, dict], dict[str, jax.Array]]:
    """Jitted `predict(params, batch)`, compiled once per canvas and batch size (and batch keys:
    pass only BATCH_KEYS, `prediction_inputs(batch)`, so that nothing else goes to the device)."""
    return jax.jit(functools.partial(predict, model, spec))


def prediction_inputs(batch: dict) -> dict:
    """The part of a batch (e.g. an evaluation batch with padded ground truth) that `predict` reads."""
    return {key: batch[key] for key in BATCH_KEYS}
