"""Mask R-CNN R50-FPN equivalent to torchvision's `maskrcnn_resnet50_fpn` (v1) for COCO.

91 class slots (background + the 90 COCO category ids, as torchvision's COCO head); contiguous
label i is COCO category id i.

    python scripts/convert_torchvision.py --config configs/mask_rcnn_r50_fpn_coco.py --input model.pth --output DIR
    python scripts/predict.py --checkpoint DIR --output OUT photo.jpg    # the checkpoint holds this config
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()

    config.model = ml_collections.ConfigDict()
    config.model.num_classes = 91
    config.model.backbone = ml_collections.ConfigDict()
    config.model.backbone.depth = 50
    config.model.backbone.stage_sizes = ()  # empty: derived from depth; set e.g. (1, 1, 1, 1) for a tiny net
    config.model.backbone.stem_width = 64
    # torchvision's COCO_V1 weights use FrozenBatchNorm eps = 0.0; a torchvision model built with
    # weights=None (random or your own training) uses 1e-5. The converter records the right one.
    config.model.backbone.bn_eps = 0.0
    config.model.fpn_channels = 256
    config.model.anchor_sizes = (32, 64, 128, 256, 512)  # one size per level P2..P6
    config.model.anchor_aspect_ratios = (0.5, 1.0, 2.0)  # height / width
    config.model.representation_size = 1024
    config.model.mask_head_channels = 256
    config.model.box_roi_size = 7
    config.model.mask_roi_size = 14
    config.model.roi_sampling_ratio = 2
    config.model.rpn_box_weights = (1.0, 1.0, 1.0, 1.0)
    config.model.roi_box_weights = (10.0, 10.0, 5.0, 5.0)

    config.input = ml_collections.ConfigDict()
    config.input.min_size = 800
    config.input.max_size = 1333
    config.input.size_divisible = 32  # torchvision-parity prediction pads to this multiple, no more
    config.input.canvas_size = (1344, 1344)  # fixed canvas for batched evaluation / training

    config.test = ml_collections.ConfigDict()
    config.test.rpn_pre_nms_top_n = 1000  # per level
    config.test.rpn_post_nms_top_n = 1000
    config.test.rpn_nms_threshold = 0.7
    config.test.rpn_min_size = 1e-3
    config.test.score_threshold = 0.05
    config.test.min_box_size = 1e-2
    config.test.nms_threshold = 0.5
    config.test.detections_per_image = 100
    # Candidate (box, class) pairs kept by score before the final NMS; torchvision keeps all that pass
    # score_threshold, which equals this whenever fewer than this many pass.
    config.test.max_candidates = 2000

    # Training targets (torchvision's defaults): proposals, anchor/RoI matching and balanced sampling.
    config.targets = ml_collections.ConfigDict()
    config.targets.rpn_pre_nms_top_n = 2000  # per level
    config.targets.rpn_post_nms_top_n = 2000
    config.targets.rpn_nms_threshold = 0.7
    config.targets.rpn_min_size = 1e-3
    config.targets.rpn_fg_iou_threshold = 0.7
    config.targets.rpn_bg_iou_threshold = 0.3
    config.targets.rpn_batch_size_per_image = 256
    config.targets.rpn_positive_fraction = 0.5
    config.targets.roi_fg_iou_threshold = 0.5
    config.targets.roi_bg_iou_threshold = 0.5
    config.targets.roi_batch_size_per_image = 512
    config.targets.roi_positive_fraction = 0.25
    config.targets.mask_rois_per_image = 128  # fixed mask-loss slots (0.25 x 512 positives at most)
    return config
