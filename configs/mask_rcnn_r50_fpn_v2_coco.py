"""Mask R-CNN R50-FPN v2, equivalent to torchvision's `maskrcnn_resnet50_fpn_v2` for COCO, with its recipe.

torchvision's v2 (47.4 box / 41.8 mask AP with its COCO_V1 weights): BatchNorm (eps 1e-5) in the
backbone, after every FPN conv and every mask-head conv, a 2-conv RPN head, and a box head of four
3x3 convs with BatchNorm and one fc layer (FastRCNNConvFCHead). Input sizes, anchors, test settings
and sampling are v1's (configs/mask_rcnn_r50_fpn_coco.py).

Training: torchvision's v2 recipe (pytorch/vision PR 5773: `--epochs 400 --lr-steps 352 384 --lr 0.1
--batch-size 2 --weight-decay 0.00004 --sync-bn --data-augmentation lsj` on 32 GPUs, no backbone
weights): from scratch, every layer trainable, BatchNorm statistics over the whole global batch
(what our jitted step computes on any mesh, torch's SyncBatchNorm), 64 images per step, large-scale
jitter. torchvision's lsj fits each image in 1024x1024 at a scale drawn from [0.1, 2.0], crops or
pads to 1024x1024, then its model resizes that square to 800x800 (min_size 800): the same as
jittering straight into an 800x800 canvas, which is what this config does.

    python scripts/convert_torchvision.py --config configs/mask_rcnn_r50_fpn_v2_coco.py --input model_v2.pth --output DIR
    python scripts/predict.py --checkpoint DIR --output OUT photo.jpg
    python scripts/train.py --config configs/mask_rcnn_r50_fpn_v2_coco.py --workdir DIR \
        --config.data.train_annotations=.../instances_train2017.json --config.data.train_images=.../train2017
"""

import pathlib

import ml_collections

from maskrcnn_jax.command_line import load_config_file

BASE = pathlib.Path(__file__).with_name("mask_rcnn_r50_fpn_coco.py")
TRAIN_IMAGES = 117_266  # COCO train2017 images with annotations, as torchvision's reference keeps them
GLOBAL_BATCH = 64  # 32 GPUs x 2 images
EPOCHS, DECAY_EPOCHS = 400, (352, 384)


def get_config() -> ml_collections.ConfigDict:
    config = load_config_file(BASE)
    config.model.architecture = "v2"
    config.model.backbone.bn_eps = 1e-5  # torchvision's BatchNorm2d, every norm layer
    config.model.box_head_channels = 256  # FastRCNNConvFCHead's four convs
    # The mask head's BatchNorm normalises over all mask slots at once: no chunked mask head.
    config.targets.mask_head_chunk_size = 0

    steps_per_epoch = TRAIN_IMAGES // GLOBAL_BATCH  # 1832
    config.data.canvases = ((800, 800),)  # one square canvas; evaluation keeps v1's canvases and sizes
    config.data.large_scale_jitter = True
    config.data.jitter_range = (0.1, 2.0)
    config.train.global_batch_size = GLOBAL_BATCH
    config.train.num_steps = EPOCHS * steps_per_epoch
    config.train.base_learning_rate = 0.1
    config.train.warmup_steps = 1000  # torchvision's reference: linear warm-up over the first 1000 iterations
    config.train.warmup_factor = 1e-3
    config.train.schedule = "multistep"
    config.train.decay_steps = tuple(epoch * steps_per_epoch for epoch in DECAY_EPOCHS)
    config.train.decay_factor = 0.1
    config.train.momentum = 0.9
    config.train.weight_decay = 4e-5  # on every trainable leaf, BatchNorm's too (no --norm-weight-decay)
    config.train.trainable_backbone_layers = 5  # no backbone weights: torchvision trains every layer
    config.train.eval_every = 10 * steps_per_epoch
    config.init.checkpoint = ""
    config.init.mode = "none"
    return config
