"""examples/dice_mask_loss.py: the variant changes only the mask loss (its total is the library's loss
plus a Dice term equal to a numpy reference, on a real shapes batch) and trains through the
library's trainer as a plugged-in loss_fn_factory."""

import importlib.util
import pathlib

import jax
import numpy as np
import pytest

from maskrcnn_jax.checkpoint import latest_step
from maskrcnn_jax.command_line import load_config_file
from maskrcnn_jax.detector import spec_from_config
from maskrcnn_jax.detector.losses import LOSS_NAMES, detector_losses
from maskrcnn_jax.models import build_model
from maskrcnn_jax.training import train_and_evaluate
from maskrcnn_jax.training import data as data_lib
from maskrcnn_jax.training.loss import loss_fn_from_config
from maskrcnn_jax.training.metric_writer import read_metrics
from random_params import random_params

REPO = pathlib.Path(__file__).resolve().parents[1]


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


dice_example = load_example("dice_mask_loss")


def tiny_config():
    config = load_config_file(REPO / "configs" / "shapes_tiny.py")
    config.train.global_batch_size = 2
    config.data.shapes.num_train_images = 8
    return config


def numpy_dice_loss(logits, targets, valid, smooth=1.0):
    """1 - (2 sum(p t) + s) / (sum p + sum t + s) per slot, p = sigmoid(logits), averaged over valid slots."""
    logits, targets = np.asarray(logits, np.float64), np.asarray(targets, np.float64)
    probabilities = 1.0 / (1.0 + np.exp(-logits))
    losses = []
    for p, t in zip(probabilities[valid], targets[valid]):
        losses.append(1.0 - (2.0 * (p * t).sum() + smooth) / (p.sum() + t.sum() + smooth))
    return float(np.mean(losses)) if losses else 0.0


def test_dice_loss_of_hand_made_masks():
    targets = np.zeros((1, 2, 4, 4), np.float32)
    targets[0, :, :2] = 1.0  # the top half
    logits = np.where(targets > 0, 30.0, -30.0).astype(np.float32)  # sigmoid 1 on the top half, 0 elsewhere
    perfect = dice_example.dice_loss(logits, targets, np.array([[True, False]]))
    assert float(perfect) == pytest.approx(0.0, abs=1e-6)
    wrong = dice_example.dice_loss(-logits, targets, np.array([[True, True]]))  # the bottom half: no overlap
    assert float(wrong) == pytest.approx(1.0 - 1.0 / (8 + 8 + 1), rel=1e-6)
    assert float(dice_example.dice_loss(logits, targets, np.array([[False, False]]))) == 0.0


def test_variant_is_the_library_loss_plus_a_dice_term(tmp_path):
    config = tiny_config()
    source = data_lib.training_source(config, tmp_path)
    batch = next(data_lib.training_iterator(config, source))
    model, spec = build_model(config), spec_from_config(config)
    params = random_params(model)
    variant, standard = dice_example.make_dice_loss_fn(config), loss_fn_from_config(config)

    @jax.jit
    def both(params, batch, key):
        aux = detector_losses(model, spec, params, batch, key)[1]
        return variant(params, batch, key), standard(params, batch, key), aux

    (variant_total, variant_metrics), (standard_total, standard_metrics), aux = both(params, batch, jax.random.key(1))
    valid = np.asarray(aux["mask_slots"]["valid"])
    assert valid.any()
    expected_dice = numpy_dice_loss(aux["mask_logits"], aux["mask_targets"], valid)
    assert float(variant_metrics["loss_mask_dice"]) == pytest.approx(expected_dice, rel=1e-4)
    for name in LOSS_NAMES:
        assert float(variant_metrics[name]) == pytest.approx(float(standard_metrics[name]), rel=1e-5), name
    assert float(variant_total) == pytest.approx(float(standard_total) + expected_dice, rel=1e-5)


def test_variant_trains_through_the_library_trainer(tmp_path):
    config = tiny_config()
    config.train.num_steps = 4
    config.train.log_every = 2
    config.train.checkpoint_every = 4
    state = train_and_evaluate(config, tmp_path, loss_fn_factory=dice_example.make_dice_loss_fn,
                               evaluate_fn_factory=lambda config, workdir: None)
    assert int(state.step) == 4 and latest_step(tmp_path) == 4
    records = read_metrics(tmp_path)
    assert [record["step"] for record in records] == [2, 4]
    for record in records:
        assert 0.0 < record["loss_mask_dice"] < 1.0
        terms = [record[name] for name in LOSS_NAMES] + [record["loss_mask_dice"]]
        assert record["loss"] == pytest.approx(sum(terms), rel=1e-5)
