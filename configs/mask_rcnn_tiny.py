"""A tiny Mask R-CNN (ResNet with one block per stage, 8-channel stem, narrow heads) for tests and CPU demos.

Same structure and prediction path as configs/mask_rcnn_r50_fpn_coco.py, a few thousand times
cheaper; 5 class slots (background + 4), small images and few proposals / detections.

    python scripts/predict.py --config configs/mask_rcnn_tiny.py --checkpoint DIR --output OUT IMAGE...
"""

import pathlib

import ml_collections

from maskrcnn_jax.command_line import load_config_file

BASE = pathlib.Path(__file__).with_name("mask_rcnn_r50_fpn_coco.py")


def get_config() -> ml_collections.ConfigDict:
    config = load_config_file(BASE)
    config.model.num_classes = 5
    config.model.backbone.stage_sizes = (1, 1, 1, 1)
    config.model.backbone.stem_width = 8
    config.model.backbone.bn_eps = 1e-5
    config.model.fpn_channels = 16
    config.model.representation_size = 32
    config.model.mask_head_channels = 16
    config.input.min_size = 96
    config.input.max_size = 128
    config.input.canvas_size = (128, 128)
    config.data.canvases = ()  # train on the one square canvas above
    config.eval.canvases = ()  # and evaluate on it
    config.test.rpn_pre_nms_top_n = 200
    config.test.rpn_post_nms_top_n = 100
    config.test.detections_per_image = 20
    config.init.checkpoint = ""  # no ImageNet weights fit this backbone: random start
    config.init.mode = "none"
    return config
