"""A stand-in training loss: a differentiable function of every head of the model, NOT Mask R-CNN's loss.

It lets the trainer run and be tested before `maskrcnn_jax.detector.losses` is plugged in, over the
real parameter tree: the RPN outputs are pulled towards "no object, no offset", and the box and
mask heads, fed with RoIs at the (randomly jittered) ground-truth boxes, learn each box's class, a
zero box offset and its mask. There are no proposals, matching or sampling.

Legend: B batch, Hc Wc canvas, M max GT instances, K classes with background, S RoI size, Sm GT crop size.
"""

import jax
import jax.numpy as jnp
import optax
from absl import logging

from maskrcnn_jax.detector import DetectorSpec, flatten_rpn_outputs, pool_rois

BOX_JITTER_PIXELS = 2.0


def _masked_mean(values, mask):
    """Mean of values [B, M] over mask [B, M] (0 when the mask is empty)."""
    mask = mask.astype(values.dtype)
    return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def make_stand_in_loss_fn(model, spec: DetectorSpec):
    """`loss_fn(params, batch, key) -> (loss, metrics)` for the trainer (see training.step for the batch).

    loss = loss_objectness + loss_rpn_box_reg + loss_classifier + loss_box_reg + loss_mask, each a
    mean over the global batch (of valid GT instances, or of every anchor), so it does not depend on
    the number of devices. The key jitters the GT boxes by up to 2 pixels.
    """
    logging.warning("training with the STAND-IN loss (maskrcnn_jax/training/stand_in_loss.py), not Mask R-CNN's")

    def loss_fn(params, batch, key):
        variables = {"params": params}
        features = model.apply(variables, batch["image"], method="features")
        # [B, A] and [B, A, 4]
        objectness, rpn_deltas = flatten_rpn_outputs(*model.apply(variables, features, method="rpn"))
        loss_objectness = jnp.mean(optax.sigmoid_binary_cross_entropy(objectness, jnp.zeros_like(objectness)))
        loss_rpn_box_reg = jnp.mean(jnp.square(rpn_deltas))

        valid = batch["gt_valid"] & batch["valid"][:, None]  # [B, M]
        classes = batch["gt_classes"]
        jitter = jax.random.uniform(key, batch["gt_boxes"].shape, minval=-BOX_JITTER_PIXELS, maxval=BOX_JITTER_PIXELS)
        rois = batch["gt_boxes"] + jitter  # [B, M, 4]

        class_logits, box_deltas = model.apply(variables, pool_rois(spec, features, rois, spec.box_roi_size),
                                               method="box_head")  # [B, M, K], [B, M, K, 4]
        loss_classifier = _masked_mean(optax.softmax_cross_entropy_with_integer_labels(class_logits, classes), valid)
        class_deltas = jnp.take_along_axis(box_deltas, classes[:, :, None, None], axis=2)[:, :, 0]  # [B, M, 4]
        loss_box_reg = _masked_mean(jnp.sum(optax.huber_loss(class_deltas, delta=1.0 / 9), axis=-1), valid)

        mask_logits = model.apply(variables, pool_rois(spec, features, rois, spec.mask_roi_size),
                                  method="mask_head")  # [B, M, 2S, 2S, K]
        class_masks = jnp.take_along_axis(mask_logits, classes[:, :, None, None, None], axis=-1)[..., 0]
        side = class_masks.shape[-1]
        targets = jax.image.resize(batch["gt_masks"].astype(jnp.float32), class_masks.shape[:2] + (side, side),
                                   "linear") >= 0.5  # [B, M, 2S, 2S] from [B, M, Sm, Sm]
        loss_mask = _masked_mean(jnp.mean(optax.sigmoid_binary_cross_entropy(class_masks, targets), axis=(-2, -1)),
                                 valid)

        losses = {"loss_objectness": loss_objectness, "loss_rpn_box_reg": loss_rpn_box_reg,
                  "loss_classifier": loss_classifier, "loss_box_reg": loss_box_reg, "loss_mask": loss_mask}
        return sum(losses.values()), losses

    return loss_fn
