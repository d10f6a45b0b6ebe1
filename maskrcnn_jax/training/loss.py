"""The loss the trainer minimises, chosen in one place: `loss_fn_from_config(config)`.

Mask R-CNN's five losses (`maskrcnn_jax.detector.losses`); a research variant passes its own
factory to `train_and_evaluate(config, workdir, loss_fn_factory=...)`.
"""

import ml_collections

from maskrcnn_jax.detector import losses, spec_from_config
from maskrcnn_jax.models import build_model
from maskrcnn_jax.training.step import LossFn


def loss_fn_from_config(config: ml_collections.ConfigDict) -> LossFn:
    """`loss_fn(params, batch, key) -> (loss, metrics)` of the model that `config` describes."""
    return losses.make_loss_fn(build_model(config), spec_from_config(config))
