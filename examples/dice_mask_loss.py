"""A functional variant in a few lines: Mask R-CNN whose mask loss adds a Dice term to the BCE.

Only the loss changes. The model, anchors, proposals, matching, sampling, mask targets and the other
four losses are the library's (`detector_losses` returns them with the mask head's logits and
targets), and the trainer is the library's too: the variant is passed as `loss_fn_factory`.

  python examples/dice_mask_loss.py --workdir /tmp/dice_shapes [--config.train.num_steps=500]
"""

import pathlib
import sys

import jax
import jax.numpy as jnp
from absl import flags

from maskrcnn_jax.command_line import run_script
from maskrcnn_jax.detector import spec_from_config
from maskrcnn_jax.detector.losses import detector_losses, loss_metrics
from maskrcnn_jax.models import build_model
from maskrcnn_jax.training import train_and_evaluate

SHAPES_CONFIG = pathlib.Path(__file__).resolve().parents[1] / "configs" / "shapes_tiny.py"


def dice_loss(mask_logits, mask_targets, valid, smooth: float = 1.0):
    """Mean over the valid mask slots of 1 - soft Dice (Milletari et al., 2016).

    mask_logits, mask_targets [B, Rm, T, T] (the GT class's channel, targets in [0, 1]); valid bool [B, Rm].
    """
    probabilities = jax.nn.sigmoid(mask_logits)
    overlap = jnp.sum(probabilities * mask_targets, axis=(-2, -1))
    total = jnp.sum(probabilities, axis=(-2, -1)) + jnp.sum(mask_targets, axis=(-2, -1))
    dice = (2.0 * overlap + smooth) / (total + smooth)
    return jnp.sum(jnp.where(valid, 1.0 - dice, 0.0)) / jnp.maximum(jnp.sum(valid), 1)


def make_dice_loss_fn(config):
    """loss_fn_factory: Mask R-CNN's five losses plus `loss_mask_dice`."""
    model, spec = build_model(config), spec_from_config(config)

    def loss_fn(params, batch, key):
        losses, aux = detector_losses(model, spec, params, batch, key)
        losses["loss_mask_dice"] = dice_loss(aux["mask_logits"], aux["mask_targets"], aux["mask_slots"]["valid"])
        total = sum(losses.values())
        return total, {"loss": total, **loss_metrics(losses, aux, batch)}

    return loss_fn


def define_flags(flag_values: flags.FlagValues) -> None:
    flags.DEFINE_string("workdir", None, "training directory", required=True, flag_values=flag_values)


def train(flag_values: flags.FlagValues, positional: list[str]) -> None:
    train_and_evaluate(flag_values.config, flag_values.workdir, loss_fn_factory=make_dice_loss_fn)


if __name__ == "__main__":
    sys.exit(run_script(train, define_flags, doc=__doc__, config_help="config file", config_default=str(SHAPES_CONFIG)))
