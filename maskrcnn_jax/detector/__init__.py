"""Pure jnp around the learned layers: anchors and RoI pooling (pyramid), proposals, post-processing,
mask pasting, prediction, and the training targets and losses. Configured by a `DetectorSpec`, never
by an ml_collections config; the model's pieces are applied by method name, so nothing here imports
`maskrcnn_jax.models` (which imports the spec)."""

from maskrcnn_jax.detector.paste import MASK_THRESHOLD, make_binary_mask_paster
from maskrcnn_jax.detector.postprocess import postprocess_detections
from maskrcnn_jax.detector.predict import (
    BATCH_KEYS,
    make_predict_fn,
    predict,
    predict_with_intermediates,
    prediction_inputs,
)
from maskrcnn_jax.detector.proposals import generate_proposals
from maskrcnn_jax.detector.pyramid import POOLED_STRIDES, flatten_rpn_outputs, pool_rois, pyramid_anchors
from maskrcnn_jax.detector.spec import DetectorSpec, ProposalSpec, SamplerSpec, spec_from_config

__all__ = [
    "BATCH_KEYS",
    "DetectorSpec",
    "MASK_THRESHOLD",
    "POOLED_STRIDES",
    "ProposalSpec",
    "SamplerSpec",
    "flatten_rpn_outputs",
    "generate_proposals",
    "make_binary_mask_paster",
    "make_predict_fn",
    "pool_rois",
    "postprocess_detections",
    "predict",
    "predict_with_intermediates",
    "prediction_inputs",
    "pyramid_anchors",
    "spec_from_config",
]
