"""The loss the trainer minimises, chosen in one place: `make_loss_fn(config)`.

PLUG-IN POINT: until the detector's training loss is wired in, this returns the stand-in loss
(`stand_in_loss.py`, NOT Mask R-CNN's loss), which says so in the log. To train Mask R-CNN, the
`return` line below becomes
    return losses.make_loss_fn(model, spec)        # from maskrcnn_jax.detector import losses
A different loss for one run: `train_and_evaluate(config, workdir, loss_fn_factory=...)`.
"""

import ml_collections

from maskrcnn_jax.detector import spec_from_config
from maskrcnn_jax.models import build_model
from maskrcnn_jax.training.stand_in_loss import make_stand_in_loss_fn
from maskrcnn_jax.training.step import LossFn


def make_loss_fn(config: ml_collections.ConfigDict) -> LossFn:
    """`loss_fn(params, batch, key) -> (loss, metrics)` of the model that `config` describes."""
    model, spec = build_model(config), spec_from_config(config)
    return make_stand_in_loss_fn(model, spec)
