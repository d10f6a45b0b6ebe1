"""DetectorSpec: every static number the detector's pure functions need, read once from the config.

The prediction and training paths take a `DetectorSpec` (a frozen, hashable dataclass, so it can be
a static argument of `jax.jit`) and never see an `ml_collections` config. `spec_from_config` is the
one place that reads `config.model`, `config.test` and `config.targets` for it.
"""

import dataclasses

import jax
import ml_collections

from maskrcnn_jax.detector.coco_classes import NO_CLASS_NAME

# The one name of BatchNorm's running statistics in train mode: the variable collection the model's
# norm layers write them into (models/norm.py) and the key under which the loss's metrics carry them
# to the train step, which writes them into the parameters (training/step.py).
NORM_STATISTICS = "norm_statistics"

# RoIAlign's boxes gathered per loop step (`ops.roi_align`'s boxes_per_step), by the platform the
# program runs on, when config.model.roi_boxes_per_step is 0: on a CPU a few boxes keep the gathered
# corners in cache (2-5x faster than all at once); on an accelerator every loop step re-reads and
# re-writes the whole feature table's gradient in the backward pass, so the boxes go at once
# (scripts/compile_report.py, docs/benchmarks.md "TPU compile report").
PLATFORM_ROI_BOXES_PER_STEP = {"cpu": 2}
ACCELERATOR_ROI_BOXES_PER_STEP = 512


@dataclasses.dataclass(frozen=True)
class ProposalSpec:
    """RPN proposal generation for one mode (train or test): per-level top-n, NMS, top-n per image."""

    pre_nms_top_n: int  # per pyramid level
    post_nms_top_n: int  # per image
    nms_threshold: float = 0.7
    min_size: float = 1e-3


@dataclasses.dataclass(frozen=True)
class SamplerSpec:
    """One matcher + balanced sampler (torchvision's Matcher and BalancedPositiveNegativeSampler)."""

    foreground_iou: float  # IoU >= this: positive
    background_iou: float  # IoU < this: negative; in between: ignored
    allow_low_quality_matches: bool
    batch_size_per_image: int  # sampled candidates per image
    positive_fraction: float


@dataclasses.dataclass(frozen=True)
class DetectorSpec:
    """Static description of a Mask R-CNN around its learned layers.

    Boxes are xyxy pixels of the padded canvas. Sizes here fix every array shape of the jitted
    prediction and loss functions.
    """

    num_classes: int  # including background (slot 0)
    anchor_sizes: tuple[int, ...] = (32, 64, 128, 256, 512)  # one per level P2..P6
    anchor_aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)  # height / width
    rpn_box_weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    roi_box_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)
    box_roi_size: int = 7
    mask_roi_size: int = 14
    roi_sampling_ratio: int = 2
    roi_boxes_per_step: int = 2  # RoIAlign boxes gathered at once: a speed and memory knob only
    test_proposals: ProposalSpec = ProposalSpec(1000, 1000)
    train_proposals: ProposalSpec = ProposalSpec(2000, 2000)
    # Test-time post-processing (torchvision RoIHeads.postprocess_detections).
    score_threshold: float = 0.05
    min_box_size: float = 1e-2
    nms_threshold: float = 0.5
    detections_per_image: int = 100
    max_candidates: int = 2000
    # Labels that never become detections: class slots without a class name, e.g. the 10 "N/A"
    # slots of torchvision's 91-slot COCO head (ids COCO never uses, which a converted model can still
    # score); dropped before per-class NMS and the top D. Set from the class names, `spec_from_config`.
    absent_classes: tuple[int, ...] = ()
    # Training: anchor and RoI matching / sampling, mask targets.
    rpn_sampler: SamplerSpec = SamplerSpec(0.7, 0.3, True, 256, 0.5)
    roi_sampler: SamplerSpec = SamplerSpec(0.5, 0.5, False, 512, 0.25)
    mask_rois_per_image: int = 128  # fixed mask-loss slots: 0.25 x 512 positives at most
    mask_target_size: int = 28  # 2 x mask_roi_size (the mask head's deconv doubles it)
    # > 0: the training step runs the mask head only on the chunks of this many slots (per image)
    # that hold a positive RoI (detector.chunks); 0: on every slot. Same losses and gradients, for a
    # mask head that computes each RoI alone.
    mask_head_chunk_size: int = 0

    def __post_init__(self):
        if self.mask_target_size != 2 * self.mask_roi_size:
            raise ValueError(f"mask_target_size {self.mask_target_size} must be 2 x mask_roi_size {self.mask_roi_size}")
        if self.mask_head_chunk_size and self.mask_rois_per_image % self.mask_head_chunk_size:
            raise ValueError(f"mask_rois_per_image {self.mask_rois_per_image} must be a multiple of "
                             f"mask_head_chunk_size {self.mask_head_chunk_size}")

    @property
    def num_anchors_per_location(self) -> int:
        return len(self.anchor_aspect_ratios)


def _proposal_spec(node: ml_collections.ConfigDict) -> ProposalSpec:
    return ProposalSpec(
        pre_nms_top_n=node.rpn_pre_nms_top_n,
        post_nms_top_n=node.rpn_post_nms_top_n,
        nms_threshold=node.rpn_nms_threshold,
        min_size=node.rpn_min_size,
    )


def _mask_head_chunk_size(model: ml_collections.ConfigDict, train: ml_collections.ConfigDict) -> int:
    """config.targets.mask_head_chunk_size, at most one image's slots; 0 for architecture v2, whose
    mask head normalises over all valid slots together (BatchNorm) and so must see them at once (so a
    v1 config switched to v2, e.g. by the converter or --config.model.architecture=v2, still works)."""
    if model.get("architecture", "v1") != "v1":
        return 0
    return min(train.get("mask_head_chunk_size", 0), train.mask_rois_per_image)


def roi_boxes_per_step(model: ml_collections.ConfigDict, platform: str | None = None) -> int:
    """config.model.roi_boxes_per_step, or when it is 0 (or absent) the default of `platform`
    ("cpu", "gpu", "tpu"; None: JAX's default backend)."""
    chosen = model.get("roi_boxes_per_step", 0)
    if chosen:
        return chosen
    return PLATFORM_ROI_BOXES_PER_STEP.get(platform or jax.default_backend(), ACCELERATOR_ROI_BOXES_PER_STEP)


def labels_without_class(class_names) -> tuple[int, ...]:
    """The labels 1..K-1 whose slot has no class name ("N/A" or empty): [K] names -> labels."""
    return tuple(label for label, name in enumerate(class_names)
                 if label > 0 and name.strip() in ("", NO_CLASS_NAME))


def spec_from_config(config: ml_collections.ConfigDict, class_names=None) -> DetectorSpec:
    """The one function that reads the detector's numbers from a config.

    Reads config.model (classes, anchors, box weights, RoI sizes, RoIAlign's boxes per step),
    config.test (test proposals and post-processing) and, when present, config.targets (training
    proposals, matchers, samplers). class_names: [K] names of the model's class slots (a checkpoint's
    metadata); when given, the slots without a name never become detections (`absent_classes`).
    """
    model, test = config.model, config.test
    training = {}
    if "targets" in config:
        train = config.targets
        training = dict(
            train_proposals=_proposal_spec(train),
            rpn_sampler=SamplerSpec(train.rpn_fg_iou_threshold, train.rpn_bg_iou_threshold, True,
                                    train.rpn_batch_size_per_image, train.rpn_positive_fraction),
            roi_sampler=SamplerSpec(train.roi_fg_iou_threshold, train.roi_bg_iou_threshold, False,
                                    train.roi_batch_size_per_image, train.roi_positive_fraction),
            mask_rois_per_image=train.mask_rois_per_image,
            mask_head_chunk_size=_mask_head_chunk_size(model, train),
        )
    return DetectorSpec(
        num_classes=model.num_classes,
        anchor_sizes=tuple(model.anchor_sizes),
        anchor_aspect_ratios=tuple(model.anchor_aspect_ratios),
        rpn_box_weights=tuple(model.rpn_box_weights),
        roi_box_weights=tuple(model.roi_box_weights),
        box_roi_size=model.box_roi_size,
        mask_roi_size=model.mask_roi_size,
        roi_sampling_ratio=model.roi_sampling_ratio,
        roi_boxes_per_step=roi_boxes_per_step(model),
        test_proposals=_proposal_spec(test),
        score_threshold=test.score_threshold,
        min_box_size=test.min_box_size,
        nms_threshold=test.nms_threshold,
        detections_per_image=test.detections_per_image,
        max_candidates=test.max_candidates,
        mask_target_size=2 * model.mask_roi_size,
        absent_classes=labels_without_class(class_names) if class_names is not None else (),
        **training,
    )
