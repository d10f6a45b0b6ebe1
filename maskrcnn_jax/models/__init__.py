"""Flax Linen modules (the only package that imports Flax) and the config -> model builder."""

from maskrcnn_jax.models.build import build_model, init_params, platform_config
from maskrcnn_jax.models.frozen import frozen_parameter_mask
from maskrcnn_jax.models.mask_rcnn import MaskRCNN

__all__ = ["MaskRCNN", "build_model", "frozen_parameter_mask", "init_params", "platform_config"]
