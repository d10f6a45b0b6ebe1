"""Resuming on the tiny shapes config. scripts/train.py end to end: a run killed with SIGKILL after
its first checkpoint and started again with the same command ends with the parameters of an
uninterrupted run; SIGTERM saves and exits 0; a checkpoint of another model is refused, naming the
fields. train_and_evaluate in this process: a damaged latest checkpoint is moved aside and the run
resumes from the one before; a full disk while checkpointing (a simulated ENOSPC) stops the run in
one line, and the same call resumes once space is back; both end as the uninterrupted run.

Every run, in a subprocess or in this process, shares the session's persistent compilation cache
(tests/conftest.py), so only the first one compiles.
"""

import errno
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import grain
import jax
import numpy as np
import pytest

from maskrcnn_jax.checkpoint import latest_params, latest_step
from maskrcnn_jax.command_line import load_config_file, report_error
from maskrcnn_jax.training import train_and_evaluate
from maskrcnn_jax.training.checkpoints import NoRestorableCheckpointError
from maskrcnn_jax.training.metric_writer import MetricWriter, read_metrics
from maskrcnn_jax.training.write_failures import WriteFailedError

REPO = pathlib.Path(__file__).resolve().parents[1]
NUM_STEPS = 10
CHECKPOINT_EVERY = 2
OVERRIDES = {"train.num_steps": NUM_STEPS, "train.checkpoint_every": CHECKPOINT_EVERY, "train.log_every": 1,
             "train.global_batch_size": 2, "data.shapes.num_train_images": 12, "train.eval_every": 0}
SHAPES_CLASS_NAMES = ["__background__", "square", "circle", "triangle"]


def train_command(workdir, *overrides):
    return [sys.executable, str(REPO / "scripts" / "train.py"), "--config", str(REPO / "configs" / "shapes_tiny.py"),
            "--workdir", str(workdir), *(f"--config.{key}={value}" for key, value in OVERRIDES.items()), *overrides]


def train_in_process(workdir) -> None:
    """What train_command(workdir) runs, in this process (no interpreter start, no flag parsing)."""
    config = load_config_file(REPO / "configs" / "shapes_tiny.py")
    config.update_from_flattened_dict(OVERRIDES)
    train_and_evaluate(config, workdir)


@pytest.fixture(scope="module")
def environment():
    return {**os.environ, "JAX_PLATFORMS": "cpu"}


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


def assert_same_run(workdir, reference) -> None:
    """The last checkpoint's parameters and every step's loss equal those of `reference`."""
    assert latest_step(workdir) == latest_step(reference) == NUM_STEPS
    params, reference_params = latest_params(workdir)[0], latest_params(reference)[0]
    jax.tree.map(lambda leaf, reference_leaf: np.testing.assert_allclose(leaf, reference_leaf, rtol=1e-6, atol=0),
                 params, reference_params)
    losses = [(r["step"], r["loss"]) for r in read_metrics(workdir) if "loss" in r]
    reference_losses = [(r["step"], r["loss"]) for r in read_metrics(reference) if "loss" in r]
    assert [step for step, _ in losses] == list(range(1, NUM_STEPS + 1))
    np.testing.assert_allclose(losses, reference_losses, rtol=1e-6)


def truncate_largest_file(step_directory: pathlib.Path) -> pathlib.Path:
    """Cuts the largest parameter data file of a checkpoint step to 1000 bytes (a bad copy)."""
    largest = max((path for path in (step_directory / "params").rglob("*") if path.is_file()),
                  key=lambda path: path.stat().st_size)
    os.truncate(largest, 1000)
    return largest


# Orbax closes its event loop when a read or write fails; TensorStore's callbacks into it then raise
# "Event loop is closed" where nothing can catch it (the scripts drop those: command_line).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_damaged_latest_checkpoint_is_moved_aside_and_the_run_resumes_from_the_one_before(
        tmp_path, uninterrupted_run, capsys):
    workdir = tmp_path / "workdir"
    shutil.copytree(uninterrupted_run, workdir)
    truncated = truncate_largest_file(workdir / "checkpoints" / str(NUM_STEPS))
    capsys.readouterr()

    train_in_process(workdir)

    output = capsys.readouterr().out.splitlines()
    [moved] = [line for line in output if "cannot be restored" in line]
    assert moved.startswith(f"checkpoint {workdir / 'checkpoints' / str(NUM_STEPS)} cannot be restored (OUT_OF_RANGE")
    [aside] = (workdir / "damaged_checkpoints").iterdir()
    assert moved.endswith(f"; moved to {aside}")
    assert (aside / truncated.relative_to(workdir / "checkpoints" / str(NUM_STEPS))).stat().st_size == 1000
    previous = NUM_STEPS - CHECKPOINT_EVERY
    assert f"resuming from step {previous} ({workdir / 'checkpoints' / str(previous)})" in output
    assert_same_run(workdir, uninterrupted_run)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_when_no_checkpoint_restores_the_run_stops_in_one_line_and_moves_nothing(tmp_path, uninterrupted_run):
    workdir = tmp_path / "workdir"
    shutil.copytree(uninterrupted_run, workdir)
    steps = sorted(int(path.name) for path in (workdir / "checkpoints").iterdir())
    for step in steps:
        truncate_largest_file(workdir / "checkpoints" / str(step))

    with pytest.raises(NoRestorableCheckpointError) as refusal:
        train_in_process(workdir)

    message = str(refusal.value)
    assert "\n" not in message
    assert message.startswith(f"no checkpoint in {workdir / 'checkpoints'} can be restored (step {steps[-1]}: "
                              "OUT_OF_RANGE")
    assert all(f"step {step}: " in message for step in steps)
    assert message.endswith("move that directory elsewhere to start again from step 0, or use another --workdir")
    assert sorted(int(path.name) for path in (workdir / "checkpoints").iterdir()) == steps
    assert not (workdir / "train.lock").exists()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_full_disk_while_checkpointing_stops_in_one_line_and_the_same_run_resumes_when_space_is_back(
        tmp_path, uninterrupted_run, monkeypatch, capsys):
    """Two runs in this process (about 20 s: each traces the step, then loads it from the cache)."""
    workdir = tmp_path / "workdir"
    save_data_position = grain.checkpoint.CheckpointHandler.save
    saves = []

    def disk_full_at_the_second_save(self, directory, *args, **kwargs):
        saves.append(directory)
        if len(saves) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(directory))
        return save_data_position(self, directory, *args, **kwargs)

    monkeypatch.setattr(grain.checkpoint.CheckpointHandler, "save", disk_full_at_the_second_save)
    with pytest.raises(WriteFailedError) as failure:
        train_in_process(workdir)

    failed, saved = 2 * CHECKPOINT_EVERY, CHECKPOINT_EVERY
    assert str(failure.value) == (f"could not write the checkpoint of step {failed} to "
                                  f"{workdir / 'checkpoints' / str(failed)}: No space left on device; "
                                  f"the last complete checkpoint is step {saved}")
    capsys.readouterr()
    assert report_error(failure.value, verbose=False) == 1  # how scripts/train.py ends
    assert capsys.readouterr().err == f"error: {failure.value}\n"
    assert latest_step(workdir) == saved
    assert not (workdir / "train.lock").exists()

    monkeypatch.undo()
    train_in_process(workdir)
    assert_same_run(workdir, uninterrupted_run)


def test_a_metrics_file_that_cannot_be_written_is_named(tmp_path):
    writer = MetricWriter(tmp_path)
    writer.write(1, {"loss": 1.0})
    (tmp_path / "metrics.jsonl").unlink()
    (tmp_path / "metrics.jsonl").symlink_to("/dev/full")  # every write fails with ENOSPC
    with pytest.raises(WriteFailedError, match=f"^could not write the metrics to {tmp_path / 'metrics.jsonl'}: "
                                               "No space left on device$"):
        writer.write(2, {"loss": 2.0})
    writer.close()


def test_a_run_from_step_0_drops_the_records_of_a_run_killed_before_its_first_checkpoint(tmp_path):
    killed = MetricWriter(tmp_path)
    killed.write(1, {"loss": 1.0})
    killed.close()
    MetricWriter(tmp_path, first_step=0).close()
    assert read_metrics(tmp_path) == []
