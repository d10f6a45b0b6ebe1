"""A tiny ResNet-FPN Mask R-CNN trained on synthetic shapes: runs on a laptop CPU with no data.

What `make demo` trains. The shapes (squares, circles, triangles with exact masks; 2,000 training
and 100 held-out images of 96-128 px) are written into WORKDIR/shapes on first use. Model as
configs/mask_rcnn_tiny.py (one block per stage, 8-channel stem) with 4 class slots, a 128x128
canvas, anchors 16-256 and few proposals / RoIs. 3,000 steps of 4 images, cosine learning rate:
held-out mask AP@[.5:.95] about 0.73 in a few minutes of two CPU cores (README, "First run").

  python scripts/train.py --config configs/shapes_tiny.py --workdir /tmp/shapes_tiny
  python scripts/train.py --config configs/shapes_tiny.py --workdir /tmp/shapes_tiny \
      --config.train.num_steps=6000 --config.train.global_batch_size=8
"""

import pathlib

import ml_collections

from maskrcnn_jax.command_line import load_config_file

BASE = pathlib.Path(__file__).with_name("mask_rcnn_tiny.py")


def get_config() -> ml_collections.ConfigDict:
    config = load_config_file(BASE)
    config.model.num_classes = 4  # background + square, circle, triangle
    config.model.anchor_sizes = (16, 32, 64, 128, 256)  # shapes are 10-58 px

    config.input.min_size = 128
    config.input.max_size = 128
    config.input.canvas_size = (128, 128)

    config.test.rpn_pre_nms_top_n = 100
    config.test.rpn_post_nms_top_n = 50
    config.test.detections_per_image = 10
    config.test.max_candidates = 200

    config.targets.rpn_pre_nms_top_n = 200
    config.targets.rpn_post_nms_top_n = 100
    config.targets.rpn_batch_size_per_image = 64
    config.targets.roi_batch_size_per_image = 32
    config.targets.mask_rois_per_image = 8

    # Data, training, evaluation and initialisation: the COCO recipe's keys (through mask_rcnn_tiny.py,
    # which starts from random weights on one square canvas), changed where the demo differs.
    config.data.source = "shapes"
    config.data.shapes = ml_collections.ConfigDict()
    config.data.shapes.num_train_images = 2000
    config.data.shapes.num_eval_images = 100
    config.data.shapes.image_size = (96, 128)  # sides drawn from [min, max]
    config.data.shapes.max_shapes = 3
    config.data.shapes.seed = 0
    for key in ("train_annotations", "train_images", "eval_annotations", "eval_images"):
        config.data[key] = ""  # no COCO files
    config.data.max_instances = 4
    config.data.num_workers = 0

    # Tuned for the CPU demo (held-out mask AP after 10,000 images: batch 4 beat batch 8, cosine beat
    # steps, 96-128 px images on a 128 canvas beat 48-64 px ones on 64 or upscaled to 128).
    config.train.num_steps = 3000
    config.train.global_batch_size = 4
    config.train.warmup_steps = 300
    config.train.schedule = "cosine"
    config.train.decay_steps = (2000, 2600)
    config.train.trainable_backbone_layers = 5  # the tiny backbone is random: train all of it
    config.train.log_every = 50
    config.train.checkpoint_every = 1000
    config.train.eval_every = 1000

    config.eval.batch_size = 4
    return config
