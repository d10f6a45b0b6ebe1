"""Mask R-CNN R50-FPN v2, equivalent to torchvision's `maskrcnn_resnet50_fpn_v2` for COCO.

torchvision's v2 (47.4 box / 41.8 mask AP with its COCO_V1 weights): BatchNorm (eps 1e-5) in the
backbone, after every FPN conv and every mask-head conv, a 2-conv RPN head, and a box head of four
3x3 convs with BatchNorm and one fc layer (FastRCNNConvFCHead). Input sizes, anchors and test
settings are v1's. Everything else is configs/mask_rcnn_r50_fpn_coco.py, training section included.

    python scripts/convert_torchvision.py --config configs/mask_rcnn_r50_fpn_v2_coco.py --input model_v2.pth --output DIR
    python scripts/predict.py --checkpoint DIR --output OUT photo.jpg
"""

import pathlib

import ml_collections

from maskrcnn_jax.command_line import load_config_file

BASE = pathlib.Path(__file__).with_name("mask_rcnn_r50_fpn_coco.py")


def get_config() -> ml_collections.ConfigDict:
    config = load_config_file(BASE)
    config.model.architecture = "v2"
    config.model.backbone.bn_eps = 1e-5  # torchvision's BatchNorm2d, every norm layer
    config.model.box_head_channels = 256  # FastRCNNConvFCHead's four convs
    return config
