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

    config.data = ml_collections.ConfigDict()
    config.data.source = "shapes"  # "shapes" | "coco" | "tfds"
    config.data.shapes = ml_collections.ConfigDict()
    config.data.shapes.num_train_images = 2000
    config.data.shapes.num_eval_images = 100
    config.data.shapes.image_size = (96, 128)  # sides drawn from [min, max]
    config.data.shapes.max_shapes = 3
    config.data.shapes.seed = 0
    config.data.train_annotations = ""  # source "coco"
    config.data.train_images = ""
    config.data.eval_annotations = ""
    config.data.eval_images = ""
    config.data.tfds_data_dir = ""  # source "tfds"
    config.data.tfds_train_split = "train"
    config.data.canvases = ()  # empty: train on config.input.canvas_size, one square canvas
    config.data.max_instances = 4
    config.data.mask_size = 112
    config.data.flip_probability = 0.5
    config.data.jitter_range = (1.0, 1.0)
    config.data.large_scale_jitter = False
    config.data.num_workers = 0

    config.train = ml_collections.ConfigDict()
    # Tuned for the CPU demo (held-out mask AP after 10,000 images: batch 4 beat batch 8, cosine beat
    # steps, 96-128 px images on a 128 canvas beat 48-64 px ones on 64 or upscaled to 128).
    config.train.num_steps = 3000
    config.train.global_batch_size = 4
    config.train.seed = 0
    config.train.base_learning_rate = 0.02
    config.train.warmup_steps = 300
    config.train.warmup_factor = 1e-3
    config.train.schedule = "cosine"  # or "multistep" (x decay_factor at each of decay_steps)
    config.train.decay_steps = (2000, 2600)
    config.train.decay_factor = 0.1
    config.train.momentum = 0.9
    config.train.weight_decay = 1e-4
    config.train.clip_norm = 0.0  # > 0: clip the trainable gradients' global norm
    config.train.trainable_backbone_layers = 5  # the tiny backbone is random: train all of it
    config.train.max_consecutive_bad_steps = 10
    config.train.log_every = 50
    config.train.checkpoint_every = 1000
    config.train.keep_checkpoints = 3
    config.train.async_checkpointing = True
    config.train.record_image_ids = False  # True: each process logs its steps' image ids (WORKDIR/image_ids)
    config.train.eval_every = 1000  # held-out COCO AP into metrics.jsonl (0: never)

    config.eval = ml_collections.ConfigDict()
    config.eval.batch_size = 4
    config.eval.max_images = 0  # > 0: the first N images only
    config.eval.host_workers = -1  # mask paste + RLE processes per host; -1: one per core but one (0 on CPU)
    config.eval.write_results = False  # True: WORKDIR/evaluation/coco_results.json, the last detections scored

    config.init = ml_collections.ConfigDict()
    config.init.checkpoint = ""  # a converted checkpoint or a training workdir
    config.init.mode = "none"  # "none" | "backbone" | "all"
    return config
