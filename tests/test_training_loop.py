"""train_and_evaluate in this process with a plugged-in loss: a loss that is never finite is
skipped step after step until config.train.max_consecutive_bad_steps stops the run."""

import jax.numpy as jnp
import pytest

from maskrcnn_jax.checkpoint import latest_step
from maskrcnn_jax.command_line import load_config_file
from maskrcnn_jax.detector.inputs import model_images
from maskrcnn_jax.training import NonFiniteLossError, train_and_evaluate
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


def test_one_step_per_canvas_compiled_before_the_loop_and_a_resumed_run_sees_the_same_batches(tmp_path):
    """Two orientation canvases: the loss is traced once per canvas, in config order (compiled
    before the loop, not when a canvas's first batch comes); the batches use both; a run stopped
    mid-epoch at step 2 and resumed gives every step's loss and canvas of the uninterrupted run."""
    config = load_config_file("configs/shapes_tiny.py")
    config.data.canvases = ((96, 128), (128, 96))
    config.train.log_every = 1
    config.train.checkpoint_every = 0
    config.data.shapes.num_train_images = 8  # 3 portrait + 5 landscape: 3 batches of 4 an epoch
    config.train.schedule, config.train.decay_steps = "multistep", (100, 200)  # rates that ignore num_steps
    traced = []

    def canvas_loss_factory(config):
        def loss_fn(params, batch, key):
            traced.append(batch["image"].shape[1:3])
            loss = jnp.sum(params["fpn"]["inner_0"]["kernel"]) * jnp.mean(model_images(batch))
            return loss, {"canvas_height": jnp.float32(batch["image"].shape[1])}
        return loss_fn

    def run(workdir, num_steps):
        config.train.num_steps = num_steps
        train_and_evaluate(config, workdir, loss_fn_factory=canvas_loss_factory,
                           evaluate_fn_factory=lambda config, workdir: None)
        return [(r["step"], r["loss"], r["canvas_height"]) for r in read_metrics(workdir)]

    uninterrupted = run(tmp_path / "whole", 6)
    assert traced == [(96, 128), (128, 96)]
    assert len(uninterrupted) == 6 and {height for _, _, height in uninterrupted} == {96.0, 128.0}
    run(tmp_path / "resumed", 2)
    assert run(tmp_path / "resumed", 6) == uninterrupted
