"""scripts/train.py end to end on the tiny shapes config: a run killed with SIGKILL after its first
checkpoint and started again with the same command ends with the parameters of an uninterrupted
run; SIGTERM saves and exits 0; a checkpoint of another model is refused, naming the fields.

Every run shares one persistent compilation cache, so only the first one compiles.
"""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from maskrcnn_jax.training import latest_params, latest_step
from maskrcnn_jax.training.metric_writer import read_metrics

REPO = pathlib.Path(__file__).resolve().parents[1]
NUM_STEPS = 10
CHECKPOINT_EVERY = 2
SHAPES_CLASS_NAMES = ["__background__", "square", "circle", "triangle"]


def train_command(workdir, *overrides):
    return [sys.executable, str(REPO / "scripts" / "train.py"), "--config", str(REPO / "configs" / "shapes_tiny.py"),
            "--workdir", str(workdir), f"--config.train.num_steps={NUM_STEPS}",
            f"--config.train.checkpoint_every={CHECKPOINT_EVERY}", "--config.train.log_every=1",
            "--config.train.global_batch_size=2", "--config.data.shapes.num_train_images=12",
            "--config.train.eval_every=0", *overrides]


@pytest.fixture(scope="module")
def environment(tmp_path_factory):
    cache = tmp_path_factory.mktemp("jax_cache")
    return {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": str(cache)}


@pytest.fixture(scope="module")
def uninterrupted_run(tmp_path_factory, environment):
    """WORKDIR of a run of NUM_STEPS from start to end."""
    workdir = tmp_path_factory.mktemp("uninterrupted") / "workdir"
    process = run(train_command(workdir), environment)
    assert process.returncode == 0, process.stderr[-4000:]
    assert "starting at step 0" in process.stdout
    return workdir


def run(command, environment, timeout=600):
    return subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=timeout)


def start(command, environment):
    return subprocess.Popen(command, cwd=REPO, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def wait_for_checkpoint(process, workdir, step, timeout=600):
    """Polls until WORKDIR/checkpoints/<step> is complete (Orbax renames it into place when done)."""
    deadline = time.monotonic() + timeout
    while not (workdir / "checkpoints" / str(step)).is_dir():
        assert process.poll() is None, process.communicate()[1][-4000:]
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.05)


def assert_same_params(first: dict, second: dict, rtol: float) -> None:
    if isinstance(first, dict):
        assert first.keys() == second.keys()
        for key in first:
            assert_same_params(first[key], second[key], rtol)
    else:
        np.testing.assert_allclose(first, second, rtol=rtol, atol=0)


def test_resume_after_sigkill_ends_with_the_parameters_of_an_uninterrupted_run(tmp_path, environment,
                                                                            uninterrupted_run):
    reference_dir, killed_dir = uninterrupted_run, tmp_path / "killed"
    process = start(train_command(killed_dir), environment)
    wait_for_checkpoint(process, killed_dir, CHECKPOINT_EVERY)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    killed_at = latest_step(killed_dir)
    assert killed_at is not None and killed_at < NUM_STEPS
    # A checkpoint whose writing never finished (as Orbax names it until the final rename) is ignored.
    unfinished = killed_dir / "checkpoints" / f"{NUM_STEPS}.orbax-checkpoint-tmp"
    if not unfinished.exists():
        shutil.copytree(killed_dir / "checkpoints" / str(killed_at), unfinished)

    resumed = run(train_command(killed_dir), environment)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert f"resuming from step {killed_at} ({killed_dir / 'checkpoints' / str(killed_at)})" in resumed.stdout
    assert latest_step(killed_dir) == latest_step(reference_dir) == NUM_STEPS

    params, config, class_names = latest_params(killed_dir)
    reference_params, reference_config, reference_class_names = latest_params(reference_dir)
    assert_same_params(params, reference_params, rtol=1e-6)
    assert class_names == reference_class_names == SHAPES_CLASS_NAMES
    assert config == reference_config
    assert config["model"]["num_classes"] == 4 and config["train"]["num_steps"] == NUM_STEPS

    # Each step is logged once, and the resumed steps saw the same batches and keys (same losses).
    records = [r for r in read_metrics(killed_dir) if "loss" in r]
    reference_records = [r for r in read_metrics(reference_dir) if "loss" in r]
    assert [r["step"] for r in records] == [r["step"] for r in reference_records] == list(range(1, NUM_STEPS + 1))
    np.testing.assert_allclose([r["loss"] for r in records], [r["loss"] for r in reference_records], rtol=1e-6)


def test_sigterm_saves_a_checkpoint_and_exits_0_then_a_rerun_resumes(tmp_path, environment):
    workdir = tmp_path / "terminated"
    # num_steps far away: only the signal can stop this run.
    process = start(train_command(workdir, "--config.train.num_steps=100000"), environment)
    wait_for_checkpoint(process, workdir, CHECKPOINT_EVERY)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-4000:]
    stopped_at = latest_step(workdir)
    assert f"stopped by a signal at step {stopped_at}; checkpoint saved" in stdout
    assert stopped_at >= CHECKPOINT_EVERY
    assert max(r["step"] for r in read_metrics(workdir)) == stopped_at

    again = run(train_command(workdir, f"--config.train.num_steps={stopped_at + 1}"), environment)
    assert again.returncode == 0, again.stderr[-4000:]
    assert f"resuming from step {stopped_at}" in again.stdout
    assert latest_step(workdir) == stopped_at + 1


def test_resume_refuses_a_checkpoint_of_another_model_naming_the_fields(environment, uninterrupted_run):
    other = run(train_command(uninterrupted_run, "--config.train.num_steps=20", "--config.model.num_classes=5",
                              "--config.model.backbone.stem_width=16"), environment)
    assert other.returncode == 1
    assert "model.num_classes: checkpoint 4, config 5" in other.stderr
    assert "model.backbone.stem_width: checkpoint 8, config 16" in other.stderr
    assert "train.num_steps" not in other.stderr  # training keys may change on resume
    assert latest_step(uninterrupted_run) == NUM_STEPS
    metadata = json.loads((uninterrupted_run / "checkpoints" / str(NUM_STEPS) / "metadata" / "metadata").read_text())
    assert metadata["class_names"] == SHAPES_CLASS_NAMES
