"""benchmarks/benchmarking.py on the tiny shapes model: FLOP counts against hand-computed ones, the stage
lists of the inference and training profiles, and benchmarks/benchmark.py's accelerator mode
(--against=none, run here on the CPU at a tiny size)."""

import json
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import benchmarking  # benchmarks/, on the tests' path (pyproject.toml)
from maskrcnn_jax.command_line import load_config_file
from maskrcnn_jax.detector import spec_from_config
from maskrcnn_jax.models import build_model, frozen_parameter_mask, init_params
from maskrcnn_jax.inference.preprocess import preprocess_batch
from maskrcnn_jax.training.optimizer import sgd_without_learning_rate
from maskrcnn_jax.training.state import TrainState

ROOT = pathlib.Path(__file__).parents[1]
CONFIG_FILE = ROOT / "configs" / "shapes_tiny.py"  # tiny model, few proposals and RoIs
CONFIG = load_config_file(CONFIG_FILE)
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


def test_train_speed_and_profile_stages():
    result = benchmarking.train_speed(CONFIG, CANVAS, batch_size=2, runs=1, profile=True)
    assert result["images_per_s"] > 0 and result["gflop"] > 0 and result["compile_s"] > 0
    assert result["device"] == jax.devices()[0].device_kind and result["dtype"] == "float32"
    check_rows(result["profile"], benchmarking.TRAIN_STAGES)


def test_benchmark_script_accelerator_mode_runs_tiny(tmp_path):
    """What a GPU user runs (docs/benchmarks.md), at a tiny size on this CPU: inference latency and throughput."""
    output = tmp_path / "inference.json"
    completed = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "benchmark.py"), "--task=inference", "--against=none",
         f"--config={CONFIG_FILE}", "--size=64x64", "--throughput_batch=2", "--runs=1", f"--output={output}"],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert completed.returncode == 0, completed.stderr[-2000:]
    result = json.loads(output.read_text())
    assert result["device"] == "cpu" and "device: cpu" in completed.stdout
    assert [row["batch"] for row in result["inference"]] == [1, 2]
    assert all(row["images_per_s"] > 0 for row in result["inference"])
    assert result["matmul_ceiling"]["gflops"] > 0


def run_benchmark_data(*args):
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "benchmark_data.py"), *args],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)


def test_benchmark_data_reports_pipeline_images_per_second(tmp_path):
    completed = run_benchmark_data(f"--config={CONFIG_FILE}", f"--workdir={tmp_path}", "--batches=2", "--step_runs=0",
                                   "--config.data.shapes.num_train_images=12")
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "images/s" in completed.stdout.split("pipeline:")[1]


def test_benchmark_data_skips_coco_without_data(tmp_path):
    completed = run_benchmark_data(f"--data={tmp_path}", "--step_runs=0")
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.startswith(f"skipped: no COCO data at {tmp_path}")
