"""Mask R-CNN R50-FPN equivalent to torchvision's `maskrcnn_resnet50_fpn` (v1) for COCO.

91 class slots (background + the 90 COCO category ids, as torchvision's COCO head); contiguous
label i is COCO category id i.

Training starts, as torchvision's recipe, from an ImageNet-pretrained ResNet-50 (config.init.mode
"backbone"), converted once into config.init.checkpoint; a missing one stops the run with the
convert command. From scratch: --config.init.mode=none.

    python scripts/convert_backbone.py --input resnet50-0676ba61.pth --output /data/resnet50_imagenet
    python scripts/train.py --config configs/mask_rcnn_r50_fpn_coco.py --workdir DIR \
        --config.init.checkpoint=/data/resnet50_imagenet \
        --config.data.train_annotations=.../instances_train2017.json --config.data.train_images=.../train2017
    python scripts/convert_torchvision.py --config configs/mask_rcnn_r50_fpn_coco.py --input model.pth --output DIR
    python scripts/predict.py --checkpoint DIR --output OUT photo.jpg    # the checkpoint holds this config
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()

    config.model = ml_collections.ConfigDict()
    # "v1": this model; "v2": torchvision's maskrcnn_resnet50_fpn_v2 (configs/mask_rcnn_r50_fpn_v2_coco.py).
    config.model.architecture = "v1"
    config.model.num_classes = 91
    config.model.backbone = ml_collections.ConfigDict()
    config.model.backbone.depth = 50
    config.model.backbone.stage_sizes = ()  # empty: derived from depth; set e.g. (1, 1, 1, 1) for a tiny net
    config.model.backbone.stem_width = 64
    # 1e-5: torchvision's FrozenBatchNorm2d when its Mask R-CNN is built on ImageNet weights (and
    # BatchNorm2d's, which trained them). Its COCO_V1 detection weights use 0.0; the torchvision
    # converter records the right one in the checkpoint it writes.
    config.model.backbone.bn_eps = 1e-5
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
    # Compute dtype of convolutions and dense layers: "auto" is bfloat16 on TPUs, float32 on GPUs
    # and CPUs (models.build.AUTO_DTYPES says why); parameters, head outputs and losses stay float32
    # (tests/test_model_dtype.py measures the difference).
    config.model.dtype = "auto"
    # RoIAlign's boxes gathered at once; 0: the platform's choice (detector.spec: 2 on a CPU, every
    # box on an accelerator). A speed and memory knob only.
    config.model.roi_boxes_per_step = 0
    # What the backward pass recomputes instead of keeping: "none", "backbone" (each ResNet bottleneck)
    # or "all" (also the FPN and the heads); less memory per chip for more compute (docs/benchmarks.md).
    config.model.remat = "none"

    config.input = ml_collections.ConfigDict()
    config.input.min_size = 800
    config.input.max_size = 1333
    config.input.size_divisible = 32  # torchvision-parity prediction pads to this multiple, no more
    config.input.canvas_size = (1344, 1344)  # one canvas for every photo (evaluation: eval.canvases, training: data.canvases)

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
    config.targets.mask_head_chunk_size = 16  # mask head only on chunks of slots holding a positive

    # Training: torchvision's recipe (references/detection, maskrcnn_resnet50_fpn): 26 epochs of the
    # 117,266 COCO train2017 images that have annotations, 16 images per step, lr 0.02, x0.1 after
    # epochs 16 and 22, 1000 warm-up iterations from 0.001 x, horizontal flip only.
    steps_per_epoch = 117_266 // 16  # 7329
    config.data = ml_collections.ConfigDict()
    config.data.source = "coco"  # "shapes" | "coco" | "tfds"
    config.data.train_annotations = "/data/coco/annotations/instances_train2017.json"
    config.data.train_images = "/data/coco/train2017"
    config.data.eval_annotations = "/data/coco/annotations/instances_val2017.json"
    config.data.eval_images = "/data/coco/val2017"
    config.data.tfds_data_dir = ""  # source "tfds": a dataset written by scripts/build_tfds.py
    config.data.tfds_train_split = "train"
    # Training canvases (H, W), one compiled step each, batches grouped by them (data.grouping): one per
    # orientation holds every resize (short side 800, long <= 1333, padded to 32: 800 and 1344), about
    # 40% fewer pixels per image than 1344x1344 (docs/benchmarks.md). Empty: (config.input.canvas_size,).
    config.data.canvases = ((800, 1344), (1344, 800))
    config.data.max_instances = 100
    config.data.mask_size = 112
    config.data.flip_probability = 0.5
    config.data.jitter_range = (1.0, 1.0)
    config.data.large_scale_jitter = False
    config.data.num_workers = 8

    config.train = ml_collections.ConfigDict()
    config.train.num_steps = 26 * steps_per_epoch
    config.train.global_batch_size = 16
    config.train.seed = 0
    config.train.base_learning_rate = 0.02
    config.train.warmup_steps = 1000
    config.train.warmup_factor = 1e-3
    config.train.schedule = "multistep"
    config.train.decay_steps = (16 * steps_per_epoch, 22 * steps_per_epoch)
    config.train.decay_factor = 0.1
    config.train.momentum = 0.9
    config.train.weight_decay = 1e-4
    config.train.clip_norm = 0.0
    config.train.trainable_backbone_layers = 3
    config.train.max_consecutive_bad_steps = 10
    config.train.log_every = 20
    config.train.checkpoint_every = 2000
    config.train.keep_checkpoints = 3
    config.train.async_checkpointing = True
    config.train.record_image_ids = False  # True: each process logs its steps' image ids (WORKDIR/image_ids)
    config.train.eval_every = steps_per_epoch

    config.eval = ml_collections.ConfigDict()
    config.eval.batch_size = 8
    config.eval.max_images = 0
    # Evaluation canvases, batches grouped by them as in training (the resize is the same: short side
    # 800, long <= 1333). Empty: (config.input.canvas_size,).
    config.eval.canvases = ((800, 1344), (1344, 800))
    config.eval.host_workers = -1  # mask paste + RLE processes per host; -1: one per core but one (0 on CPU)
    config.eval.write_results = False  # True: WORKDIR/evaluation/coco_results.json, the last detections scored

    # ImageNet weights for the backbone (scripts/convert_backbone.py writes this directory); checked
    # when training starts, so predicting or benchmarking with this config needs none.
    config.init = ml_collections.ConfigDict()
    config.init.checkpoint = "/data/resnet50_imagenet"
    config.init.mode = "backbone"  # "none": from scratch; "all": a whole converted or trained model
    return config
