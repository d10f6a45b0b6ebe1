"""maskrcnn_jax.benchmarking on the tiny model: FLOP counts against hand-computed ones, the stage lists
of the inference and training profiles, and the images/s helpers of scripts/benchmark.py's
accelerator mode (run here on the CPU at a tiny size)."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from maskrcnn_jax import benchmarking
from maskrcnn_jax.command_line import load_config_file
from maskrcnn_jax.detector import spec_from_config
from maskrcnn_jax.models import build_model, frozen_parameter_mask, init_params
from maskrcnn_jax.preprocess import preprocess_batch
from maskrcnn_jax.training.optimizer import update_direction
from maskrcnn_jax.training.state import TrainState

CONFIG = load_config_file(pathlib.Path(__file__).parents[1] / "configs" / "mask_rcnn_tiny.py")
CANVAS = (96, 128)


@pytest.fixture(scope="module")
def tiny():
    model, spec = build_model(CONFIG), spec_from_config(CONFIG)
    return model, spec, init_params(model, jax.random.key(0))


def test_flops_of_a_matmul_are_two_m_n_k():
    m, k, n = 64, 32, 48
    profiler = benchmarking.StageProfiler(repeats=2)
    product = profiler.run("matmul", jnp.matmul, jnp.ones((m, k)), jnp.ones((k, n)))
    np.testing.assert_array_equal(product, np.full((m, n), k))
    (stage,) = profiler.rows()
    assert stage["gflop"] * 1e9 == 2 * m * n * k
    assert stage["seconds"] > 0 and stage["share"] == 1.0
    ceiling = benchmarking.matmul_ceiling(size=128, repeats=2)
    assert ceiling["gflop"] * 1e9 == 2 * 128**3 and ceiling["gflops"] > 0


def check_rows(rows, names):
    assert [row["stage"] for row in rows] == list(names)
    assert all(row["seconds"] > 0 and row["gflop"] >= 0 for row in rows)
    assert sum(row["share"] for row in rows) == pytest.approx(1.0)
    table = benchmarking.format_profile(rows, ceiling_gflops=100.0)
    assert all(name in table for name in names) and "sum of stages" in table


def test_inference_profile_stages(tiny):
    model, spec, params = tiny
    image = np.random.default_rng(0).uniform(0, 255, (*CANVAS, 3)).astype(np.float32)
    batch = preprocess_batch([image], CONFIG.input.min_size, CONFIG.input.max_size, None, CONFIG.input.size_divisible)
    rows = benchmarking.profile_inference(model, spec, params, batch, CANVAS, repeats=1)
    check_rows(rows, benchmarking.INFERENCE_STAGES)
    assert rows[0]["gflop"] > 0  # the backbone's convolutions are counted


def test_train_profile_stages(tiny):
    model, spec, params = tiny
    frozen = frozen_parameter_mask(params, trainable_backbone_layers=3)
    optimizer = update_direction(frozen, momentum=0.9, weight_decay=1e-4)
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params),
                       key=jax.random.key_data(jax.random.key(0)))
    batch = benchmarking.synthetic_training_batch(2, CANVAS, spec.num_classes, max_instances=4, mask_size=28)
    rows = benchmarking.profile_train_step(model, spec, state, batch, optimizer, 0.01, frozen, repeats=1)
    check_rows(rows, benchmarking.TRAIN_STAGES)
