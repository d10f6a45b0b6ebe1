"""train_and_evaluate in this process with a plugged-in loss: a loss that is never finite is
skipped step after step until config.train.max_consecutive_bad_steps stops the run."""

import jax.numpy as jnp
import pytest

from maskrcnn_jax.command_line import load_config_file
from maskrcnn_jax.training import NonFiniteLossError, latest_step, train_and_evaluate
from maskrcnn_jax.training.metric_writer import read_metrics


def test_consecutive_non_finite_steps_stop_the_run_naming_the_step(tmp_path):
    config = load_config_file("configs/shapes_tiny.py")
    config.train.num_steps = 10
    config.train.checkpoint_every = 5
    config.train.log_every = 1
    config.train.max_consecutive_bad_steps = 3
    config.data.shapes.num_train_images = 8

    def nan_loss_factory(config):
        def loss_fn(params, batch, key):
            loss = jnp.sum(params["fpn"]["inner_0"]["kernel"]) * jnp.mean(batch["image"]) * jnp.nan
            return loss, {"loss_nan": loss}
        return loss_fn

    with pytest.raises(NonFiniteLossError, match="3 consecutive steps up to step 3 .* those of step 0"):
        train_and_evaluate(config, tmp_path, loss_fn_factory=nan_loss_factory,
                           evaluate_fn_factory=lambda config, workdir: None)
    records = read_metrics(tmp_path)
    assert [(r["step"], r["skipped_steps"], r["loss"]) for r in records] == [(1, 1, None), (2, 1, None)]
    assert latest_step(tmp_path) is None
