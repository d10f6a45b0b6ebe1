"""The five Mask R-CNN training losses as one pure function of (params, batch, key).

Legend: B batch, Hc Wc canvas, M max GT instances, A anchors, P proposals, S_rpn sampled anchors,
R sampled RoIs, Rm mask slots, T mask target side, K classes including background.

Normalisation is torchvision's, over the whole batch (its samples are concatenated before the
means): RPN objectness BCE averaged over the sampled anchors; RPN box smooth-L1 (beta 1/9) summed
over positive anchors / sampled anchors; class cross-entropy averaged over sampled RoIs; box
smooth-L1 (beta 1/9) of the GT class summed over positive RoIs / sampled RoIs; mask BCE on the GT
class channel averaged over the positive RoIs' pixels.

The model runs in training mode: BatchNorm layers (architecture v2) normalise with the statistics
of the batch (in the heads, of the valid RoIs only) and report their new running statistics;
FrozenBatchNorm (v1) has no training mode.
"""

import functools
from typing import Callable

import jax
import jax.numpy as jnp
from flax.traverse_util import flatten_dict, unflatten_dict

from maskrcnn_jax.detector.chunks import map_valid_chunks
from maskrcnn_jax.detector.inputs import model_images
from maskrcnn_jax.detector.proposals import generate_proposals
from maskrcnn_jax.detector.pyramid import flatten_rpn_outputs, pool_rois, pyramid_anchors
from maskrcnn_jax.detector.spec import NORM_STATISTICS, DetectorSpec
from maskrcnn_jax.detector.targets import crop_mask_targets, mask_slots, roi_targets, rpn_targets

SMOOTH_L1_BETA = 1.0 / 9.0
LOSS_NAMES = ("loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_mask")


def smooth_l1(x, beta: float = SMOOTH_L1_BETA):
    """torch's smooth_l1_loss per element: 0.5 x^2 / beta where |x| < beta, else |x| - 0.5 beta."""
    absolute = jnp.abs(x)
    return jnp.where(absolute < beta, 0.5 * x * x / beta, absolute - 0.5 * beta)


def binary_cross_entropy_with_logits(logits, targets):
    """Per-element BCE, numerically stable as torch's: max(x, 0) - x t + log(1 + exp(-|x|))."""
    return jnp.maximum(logits, 0.0) - logits * targets + jnp.log1p(jnp.exp(-jnp.abs(logits)))


def _masked_sum(values, mask):
    return jnp.sum(jnp.where(mask, values, 0.0))


def crop_mask_targets_batch(batch: dict, slots: dict, target_size: int) -> jax.Array:
    """Default mask targets [B, Rm, T, T] from the batch's box-cropped GT masks (see targets.crop_mask_targets)."""
    return jax.vmap(functools.partial(crop_mask_targets, target_size=target_size))(
        batch["gt_masks"], batch["gt_boxes"], slots)


MaskTargetsFn = Callable[[dict, dict, int], jax.Array]


def training_proposals(spec: DetectorSpec, anchors, level_sizes, objectness: jax.Array, rpn_deltas: jax.Array,
                       image_sizes: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Training-time proposals from the RPN's flattened outputs (objectness [B, A], deltas [B, A, 4];
    pass them detached) and image_sizes int32 [B, 2] -> (proposals [B, P, 4], valid bool [B, P])."""
    propose = functools.partial(generate_proposals, anchors=anchors, level_sizes=level_sizes,
                                proposal_spec=spec.train_proposals, box_weights=spec.rpn_box_weights)
    proposals, _, proposal_valid = jax.vmap(lambda o, d, size: propose(o, d, image_size=size))(
        objectness, rpn_deltas, image_sizes)
    return proposals, proposal_valid


def training_targets(spec: DetectorSpec, anchors, proposals: jax.Array, proposal_valid: jax.Array, batch: dict,
                     key: jax.Array, mask_targets_fn: MaskTargetsFn = crop_mask_targets_batch) -> dict:
    """The samples and targets of one step: {"rpn": rpn_targets per image, "rois": roi_targets per
    image (GT appended), "mask_slots": mask_slots per image, "mask_targets" [B, Rm, T, T]}; examples
    with batch["valid"] False get no valid sample. anchors [A, 4], proposals [B, P, 4] and
    proposal_valid [B, P] from `training_proposals`; batch and key as `detector_losses`'."""
    batch_size = batch["image"].shape[0]
    example_valid = batch["valid"]
    gt_boxes = batch["gt_boxes"]
    gt_valid = batch["gt_valid"] & example_valid[:, None]
    rpn_key, roi_key = jax.random.split(key)

    rpn = jax.vmap(functools.partial(rpn_targets, anchors, sampler=spec.rpn_sampler, box_weights=spec.rpn_box_weights))(
        gt_boxes, gt_valid, batch["image_size"], jax.random.split(rpn_key, batch_size))
    rpn["valid"] = rpn["valid"] & example_valid[:, None]
    rpn["positive"] = rpn["positive"] & rpn["valid"]

    rois = jax.vmap(functools.partial(roi_targets, sampler=spec.roi_sampler, box_weights=spec.roi_box_weights))(
        proposals, proposal_valid, gt_boxes, batch["gt_classes"], gt_valid, jax.random.split(roi_key, batch_size))
    rois["valid"] = rois["valid"] & example_valid[:, None]
    rois["positive"] = rois["positive"] & rois["valid"]
    rois["boxes"] = jax.lax.stop_gradient(rois["boxes"])

    slots = jax.vmap(functools.partial(mask_slots, num_slots=spec.mask_rois_per_image))(rois)
    mask_targets = jax.lax.stop_gradient(mask_targets_fn(batch, slots, spec.mask_target_size))
    return {"rpn": rpn, "rois": rois, "mask_slots": slots, "mask_targets": mask_targets}


def head_losses(objectness: jax.Array, rpn_deltas: jax.Array, class_logits: jax.Array, box_deltas: jax.Array,
                mask_logits: jax.Array, targets: dict) -> tuple[dict, dict]:
    """The five losses from the heads' outputs on the samples of `training_targets`.

    objectness [B, A], rpn_deltas [B, A, 4] (all anchors), class_logits [B, R, K], box_deltas [B, R, K, 4]
    (the sampled RoIs), mask_logits [B, Rm, T, T] (the mask slots, each its GT class's channel).
    Returns (losses {LOSS_NAMES: scalar}, {"class_box_deltas" [B, R, 4] of the target class,
    "mask_logits" [B, Rm, T, T]}).
    """
    rpn, rois, slots = targets["rpn"], targets["rois"], targets["mask_slots"]
    sampled_logits = jnp.take_along_axis(objectness, rpn["index"], axis=1)
    sampled_deltas = jnp.take_along_axis(rpn_deltas, rpn["index"][..., None], axis=1)
    num_anchors = jnp.maximum(jnp.sum(rpn["valid"]), 1)
    losses = {
        "loss_objectness": _masked_sum(
            binary_cross_entropy_with_logits(sampled_logits, rpn["positive"].astype(jnp.float32)), rpn["valid"]
        ) / num_anchors,
        "loss_rpn_box_reg": _masked_sum(smooth_l1(sampled_deltas - rpn["box_targets"]), rpn["positive"][..., None])
        / num_anchors,
    }

    cross_entropy = jax.nn.logsumexp(class_logits, axis=-1) - jnp.take_along_axis(
        class_logits, rois["classes"][..., None], axis=-1)[..., 0]
    class_deltas = jnp.take_along_axis(box_deltas, rois["classes"][..., None, None], axis=2)[:, :, 0]
    num_rois = jnp.maximum(jnp.sum(rois["valid"]), 1)
    losses["loss_classifier"] = _masked_sum(cross_entropy, rois["valid"]) / num_rois
    losses["loss_box_reg"] = _masked_sum(smooth_l1(class_deltas - rois["box_targets"]), rois["positive"][..., None]) / num_rois

    mask_targets = targets["mask_targets"]
    num_mask_pixels = jnp.maximum(jnp.sum(slots["valid"]), 1) * mask_targets.shape[-1] ** 2
    losses["loss_mask"] = _masked_sum(binary_cross_entropy_with_logits(mask_logits, mask_targets),
                                      slots["valid"][..., None, None]) / num_mask_pixels
    return losses, {"class_box_deltas": class_deltas, "mask_logits": mask_logits}


def _apply_in_training_mode(model, params, statistics: dict, *args, method, **kwargs):
    """`model.apply` of `method` in training mode; the BatchNorm layers' new running statistics go into
    `statistics` ({path: array}, flattened)."""
    outputs, updates = model.apply({"params": params}, *args, method=method, train=True, mutable=[NORM_STATISTICS],
                                   **kwargs)
    statistics.update(flatten_dict(updates.get(NORM_STATISTICS, {})))
    return outputs


def roi_heads(model, spec: DetectorSpec, params, features, rois: dict, slots: dict) -> tuple[tuple, dict]:
    """The RoI heads in training mode on the sampled RoIs and mask slots of `training_targets`.

    features: the pyramid levels (those `pool_rois` reads at least); rois / slots: `targets["rois"]` /
    `targets["mask_slots"]`. Returns ((class_logits [B,R,K], box_deltas [B,R,K,4], mask_logits
    [B,Rm,T,T] of the GT class's channel), the BatchNorm layers' new running statistics {path: array}).
    """
    statistics = {}
    class_logits, box_deltas = _apply_in_training_mode(
        model, params, statistics, pool_rois(spec, features, rois["boxes"], spec.box_roi_size), valid=rois["valid"],
        method="box_head")
    # Mask head on the positive RoIs (fixed slots), computing the GT class's channel only.
    mask_features = pool_rois(spec, features, slots["boxes"], spec.mask_roi_size)
    if spec.mask_head_chunk_size:
        mask_logits = map_valid_chunks(
            lambda chunk: model.apply({"params": params}, chunk[0], classes=chunk[1], method="mask_head"),
            (mask_features, slots["classes"]), slots["valid"], spec.mask_head_chunk_size)
    else:
        mask_logits = _apply_in_training_mode(model, params, statistics, mask_features, valid=slots["valid"],
                                              classes=slots["classes"], method="mask_head")
    return (class_logits, box_deltas, mask_logits), statistics


def detector_losses(model, spec: DetectorSpec, params, batch: dict, key: jax.Array,
                    mask_targets_fn: MaskTargetsFn = crop_mask_targets_batch) -> tuple[dict, dict]:
    """Losses and the samples they were computed on.

    batch: the data pipeline's {"image" uint8 [B,Hc,Wc,3] (or float32 normalised: `inputs.model_images`), "image_size" int32 [B,2], "gt_boxes" [B,M,4],
    "gt_classes" int32 [B,M], "gt_masks" uint8 [B,M,Sm,Sm], "gt_valid" bool [B,M], "valid" bool [B]}
    (examples with valid False contribute nothing). key: the step's sampling key.
    mask_targets_fn(batch, mask_slots, T) -> [B, Rm, T, T]: how mask targets are made (parity tests
    substitute torchvision's roi_align of full-image masks).
    Returns (losses {LOSS_NAMES: scalar}, aux {"rpn": rpn_targets per image, "proposals" [B,P,4],
    "proposal_valid" [B,P], "rois": roi_targets per image, "mask_slots": mask_slots per image, and the
    RoI heads' outputs the losses were computed from, for a variant that replaces one term:
    "class_logits" [B,R,K], "class_box_deltas" [B,R,4] (the target class's), "mask_logits" [B,Rm,T,T]
    (the GT class's channel), "mask_targets" [B,Rm,T,T], and "norm_statistics": the BatchNorm
    layers' new running `mean` / `var` as a partial tree of `params`, empty without BatchNorm}).
    The stages (features, RPN head, `training_proposals`, `training_targets`, `roi_heads`,
    `head_losses`) are separate functions so that benchmarks/benchmark.py can time each one.
    """
    statistics = {}
    images = model_images(batch)
    features = _apply_in_training_mode(model, params, statistics, images, method="features")
    objectness, rpn_deltas = flatten_rpn_outputs(*model.apply({"params": params}, features, method="rpn"))
    anchors, level_sizes = pyramid_anchors(spec, images.shape[1:3], [level.shape[1:3] for level in features])
    # Proposals from the detached RPN outputs, then RoI sampling with the GT boxes appended.
    proposals, proposal_valid = training_proposals(spec, anchors, level_sizes, jax.lax.stop_gradient(objectness),
                                                   jax.lax.stop_gradient(rpn_deltas), batch["image_size"])
    targets = training_targets(spec, anchors, proposals, proposal_valid, batch, key, mask_targets_fn)
    (class_logits, box_deltas, mask_logits), head_statistics = roi_heads(
        model, spec, params, features, targets["rois"], targets["mask_slots"])
    statistics.update(head_statistics)
    losses, selected = head_losses(objectness, rpn_deltas, class_logits, box_deltas, mask_logits, targets)
    aux = {"rpn": targets["rpn"], "proposals": proposals, "proposal_valid": proposal_valid, "rois": targets["rois"],
           "mask_slots": targets["mask_slots"], "class_logits": class_logits, **selected,
           "mask_targets": targets["mask_targets"], NORM_STATISTICS: unflatten_dict(statistics)}
    return losses, aux


def loss_metrics(losses: dict, aux: dict, batch: dict) -> dict:
    """Scalars worth logging: each loss and per-image means of the sample counts."""
    num_images = jnp.maximum(jnp.sum(batch["valid"]), 1)
    rois = aux["rois"]
    num_positive_rois = jnp.sum(rois["positive"])
    return {
        **losses,
        "positive_anchors": jnp.sum(aux["rpn"]["positive"]) / num_images,
        "sampled_anchors": jnp.sum(aux["rpn"]["valid"]) / num_images,
        "positive_rois": num_positive_rois / num_images,
        "sampled_rois": jnp.sum(rois["valid"]) / num_images,
        "gt_per_image": jnp.sum(batch["gt_valid"] & batch["valid"][:, None]) / num_images,
        "positive_roi_iou": _masked_sum(rois["iou"], rois["positive"]) / jnp.maximum(num_positive_rois, 1),
    }


def make_loss_fn(model, spec: DetectorSpec, mask_targets_fn: MaskTargetsFn = crop_mask_targets_batch):
    """`loss_fn(params, batch, key) -> (total loss, metrics)` for the trainer (pure; jit it there).

    metrics: the five losses, "loss" (their sum) and the sample counts of `loss_metrics`; with
    BatchNorm also "norm_statistics", the running statistics the train step writes into the
    parameters (see training.step).
    """

    def loss_fn(params, batch, key):
        losses, aux = detector_losses(model, spec, params, batch, key, mask_targets_fn)
        total = sum(losses[name] for name in LOSS_NAMES)
        metrics = {"loss": total, **loss_metrics(losses, aux, batch)}
        if aux[NORM_STATISTICS]:
            metrics[NORM_STATISTICS] = aux[NORM_STATISTICS]
        return total, metrics

    return loss_fn
