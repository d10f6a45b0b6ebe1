"""configs/mask_rcnn_r50_fpn_v2_coco.py carries torchvision's v2 recipe (pytorch/vision PR 5773) and trains on an 800x800 canvas."""

import numpy as np

from conftest import shared_data_path
from maskrcnn_jax.command_line import load_config_file
from maskrcnn_jax.detector import spec_from_config
from maskrcnn_jax.models import build_model
from maskrcnn_jax.training import data as data_lib
from maskrcnn_jax.training.setup import training_canvases

V2_CONFIG = "configs/mask_rcnn_r50_fpn_v2_coco.py"


def test_v2_config_holds_the_pr_5773_recipe():
    """`--epochs 400 --lr-steps 352 384 --lr 0.1 --batch-size 2 --weight-decay 0.00004 --sync-bn
    --data-augmentation lsj` on 8 GPUs x 4 nodes, no backbone weights."""
    config = load_config_file(V2_CONFIG)
    train = config.train
    steps_per_epoch = 117_266 // (8 * 4 * 2)
    assert steps_per_epoch == 1832
    assert train.global_batch_size == 64
    assert train.num_steps == 400 * steps_per_epoch
    assert tuple(train.decay_steps) == (352 * steps_per_epoch, 384 * steps_per_epoch) and train.decay_factor == 0.1
    assert (train.base_learning_rate, train.momentum, train.weight_decay) == (0.1, 0.9, 4e-5)
    assert train.trainable_backbone_layers == 5 and config.init.mode == "none"
    assert config.data.large_scale_jitter and tuple(config.data.jitter_range) == (0.1, 2.0)
    assert training_canvases(config) == [(800, 800)]
    # Evaluation keeps torchvision's test-time sizes.
    assert (config.input.min_size, config.input.max_size) == (800, 1333)
    assert build_model(config).norm == "batch" and spec_from_config(config).mask_head_chunk_size == 0


def test_v2_never_chunks_the_mask_head():
    """Chunks would split the mask slots' BatchNorm statistics: a v1 config switched to v2 (the converter
    does so for a v2 state_dict) runs v2's mask head on every slot at once."""
    config = load_config_file("configs/mask_rcnn_r50_fpn_coco.py")
    assert spec_from_config(config).mask_head_chunk_size == 16
    config.model.architecture = "v2"
    assert spec_from_config(config).mask_head_chunk_size == 0


def test_v2_training_batches_are_800x800_with_large_scale_jitter(tmp_path):
    root = shared_data_path("coco_train2017_85")
    config = load_config_file(V2_CONFIG)
    config.data.train_annotations = str(root / "annotations.json")
    config.data.train_images = str(root / "images")
    config.data.num_workers = 0
    config.train.global_batch_size = 4
    batches = data_lib.training_iterator(config, data_lib.training_source(config, tmp_path))
    scales = []
    for _ in range(3):
        batch = next(batches)
        assert batch["image"].shape == (4, 800, 800, 3)
        heights, widths = batch["image_size"][:, 0], batch["image_size"][:, 1]
        assert np.all((heights <= 800) & (widths <= 800))
        scales.extend(np.maximum(heights, widths) / 800)
    # Jittered from 0.1x to 2x of the fitted size (crops cap the upscaled ones at the canvas).
    assert min(scales) < 0.9 and max(scales) == 1.0
