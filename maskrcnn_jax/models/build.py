"""Builds the model from a config and creates its parameters.

The layer widths come from `config.model`; the class count, anchors per location and RoI sizes
come from the `DetectorSpec` that the prediction and loss code use, so model and spec agree by
construction.
"""

import jax
import jax.numpy as jnp
import ml_collections

from maskrcnn_jax.detector.spec import roi_boxes_per_step, spec_from_config
from maskrcnn_jax.models.mask_rcnn import MaskRCNN
from maskrcnn_jax.models.resnet import resnet_stage_sizes


# config.model.dtype "auto", by platform: bfloat16 on TPUs (their matrix units' type); float32 elsewhere:
# on an H200 the float32 training step was the faster one (98.6 against 78.1 images/s,
# docs/benchmarks.md), and CPUs have no fast bfloat16.
AUTO_DTYPES = {"tpu": "bfloat16"}


def compute_dtype(model_config: ml_collections.ConfigDict, platform: str | None = None) -> jnp.dtype:
    """config.model.dtype ("float32", "bfloat16" or "auto": by `platform`, None: JAX's default backend)."""
    name = model_config.get("dtype", "float32")
    if name == "auto":
        name = AUTO_DTYPES.get(platform or jax.default_backend(), "float32")
    return jnp.dtype(name)


def platform_config(config: ml_collections.ConfigDict, platform: str) -> ml_collections.ConfigDict:
    """A copy of `config` with its platform-dependent choices made for `platform` ("cpu", "gpu",
    "tpu"): config.model.dtype "auto" and config.model.roi_boxes_per_step 0. The trainer and the
    compile report build their programs from it (they may compile for another platform than JAX's
    default backend)."""
    config = ml_collections.ConfigDict(config.to_dict())
    with config.unlocked():
        config.model.dtype = compute_dtype(config.model, platform).name
        config.model.roi_boxes_per_step = roi_boxes_per_step(config.model, platform)
    return config


def build_model(config: ml_collections.ConfigDict) -> MaskRCNN:
    """MaskRCNN from `config.model` (architecture: "v1" (default) or "v2", backbone.{depth or
    stage_sizes, stem_width, bn_eps}, fpn_channels, representation_size, mask_head_channels,
    box_head_channels (v2's conv box head, default 256), dtype: "float32", "bfloat16" or "auto"
    (`compute_dtype`) compute, parameters and loss reductions stay float32; remat: "none", "backbone"
    or "all", what the backward pass recomputes, `mask_rcnn.REMAT_CHOICES`) and `spec_from_config(config)`."""
    model_config = config.model
    spec = spec_from_config(config)
    backbone = model_config.backbone
    return MaskRCNN(
        num_classes=spec.num_classes,
        stage_sizes=backbone_stage_sizes(backbone),
        stem_width=backbone.stem_width,
        bn_eps=backbone.bn_eps,
        fpn_channels=model_config.fpn_channels,
        num_anchors=spec.num_anchors_per_location,
        representation_size=model_config.representation_size,
        mask_head_channels=model_config.mask_head_channels,
        box_head_channels=model_config.get("box_head_channels", 256),
        box_roi_size=spec.box_roi_size,
        mask_roi_size=spec.mask_roi_size,
        dtype=compute_dtype(model_config),
        architecture=model_config.get("architecture", "v1"),
        remat=model_config.get("remat", "none"),
    )


def backbone_stage_sizes(backbone: ml_collections.ConfigDict) -> tuple[int, ...]:
    """Blocks per ResNet stage of config.model.backbone: its stage_sizes, or those of its depth when empty."""
    return tuple(backbone.stage_sizes) if backbone.get("stage_sizes") else resnet_stage_sizes(backbone.depth)


def init_params(model: MaskRCNN, rng: jax.Array, image_size: tuple[int, int] = (64, 64)) -> dict:
    """Random parameters (the `params` collection) for `model`; the image size only shapes the dummy input.

    The initializers draw from an "rbg" key derived from `rng`: with the default partitionable
    threefry, XLA:CPU takes about 2.5x longer to compile the hundreds of random draws.
    """
    images = jnp.zeros((1, image_size[0], image_size[1], 3), jnp.float32)

    def init(key):
        rbg_key = jax.random.wrap_key_data(jax.random.bits(key, (4,), jnp.uint32), impl="rbg")
        return model.init(rbg_key, images)["params"]

    return jax.jit(init)(rng)
