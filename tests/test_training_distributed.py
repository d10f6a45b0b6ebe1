"""Two local processes of 4 fake CPU devices each, joined with jax.distributed on 127.0.0.1 through
scripts/train.py's multi-host flags: they train 3 steps on one 8-device mesh, checkpoint (each
its own data-iterator state) and evaluate together (at step 2, mid-run, and at the end: each process
its shard of the evaluation set, the batch split over all 8 devices, process 0 scoring); started
again, both resume from step 3. The step-3 evaluation equals one process on one device exactly.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys

import pytest

from maskrcnn_jax.checkpoint import load_metadata
from maskrcnn_jax.evaluation import STAT_NAMES
from maskrcnn_jax.training import latest_params, latest_step
from maskrcnn_jax.training.evaluation import RESULTS_FILE, make_coco_evaluator
from maskrcnn_jax.training.metric_writer import read_metrics

REPO = pathlib.Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def train_both(workdir, num_steps: int, environment) -> list[subprocess.CompletedProcess]:
    """Runs scripts/train.py as processes 0 and 1 of a 2-process job; returns both outcomes."""
    port = free_port()
    processes = [
        subprocess.Popen(
            [sys.executable, str(REPO / "scripts" / "train.py"), "--config", str(REPO / "configs" / "shapes_tiny.py"),
             "--workdir", str(workdir), "--coordinator_address", f"127.0.0.1:{port}", "--num_processes", "2",
             "--process_id", str(index), f"--config.train.num_steps={num_steps}", "--config.train.checkpoint_every=3",
             "--config.train.eval_every=2", "--config.train.log_every=1", "--config.train.global_batch_size=8",
             "--config.data.shapes.num_train_images=16", "--config.data.shapes.num_eval_images=5",
             "--config.eval.write_results=true"],
            cwd=REPO, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for index in range(2)
    ]
    outcomes = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=600)
        outcomes.append(subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr))
    return outcomes


@pytest.fixture(scope="module")
def environment(tmp_path_factory):
    return {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
            "JAX_COMPILATION_CACHE_DIR": str(tmp_path_factory.mktemp("jax_cache"))}


def test_two_distributed_processes_train_checkpoint_and_resume(tmp_path, environment):
    """Slow (about 10 s alone, 60-70 s beside the other xdist worker): two rounds of two train.py
    processes, each starting jax.distributed and compiling its own step; that is the multi-host path."""
    workdir = tmp_path / "workdir"
    first = train_both(workdir, 3, environment)
    for outcome in first:
        assert outcome.returncode == 0, outcome.stderr[-4000:]
    assert "starting at step 0" in first[0].stdout and "step 3/3" in first[0].stdout
    assert "starting at step" not in first[1].stdout and "step 1/3" not in first[1].stdout  # only process 0 reports
    assert latest_step(workdir) == 3
    iterator_states = sorted(path.name for path in (workdir / "checkpoints" / "3" / "data_iterator").iterdir()
                             if path.suffix == ".json")
    assert iterator_states == ["process_0-of-2.json", "process_1-of-2.json"]
    # Both evaluated: 5 images in a global batch of 4 rounded up to the 8 devices (4 and 1 per process).
    for index, (outcome, images) in enumerate(zip(first, (4, 1))):
        assert f"evaluation: process {index} of 2, model on 8 of 8 cpu devices (4 on this process)" in outcome.stdout
        assert "global batch 8" in outcome.stdout and f"for {images} images on process {index})" in outcome.stdout
    assert "cocoeval:" in first[0].stdout

    # The step-3 evaluation of the 2 x 4-device run equals one process on one device with the same
    # per-device batch (1): the same detections (every box, score and RLE, in the same order) and all
    # 24 numbers exactly. (Three steps from random weights score AP 0, so the detections are the test.)
    sharded_metrics = [r for r in read_metrics(workdir) if r["step"] == 3 and "eval/bbox_AP" in r][0]
    sharded_results = json.loads((workdir / RESULTS_FILE).read_text())
    params, _, _ = latest_params(workdir)
    config, _ = load_metadata(workdir)
    config.eval.batch_size = 1
    reference = make_coco_evaluator(config, workdir)(params)
    assert json.loads((workdir / RESULTS_FILE).read_text()) == sharded_results
    assert len({r["image_id"] for r in sharded_results}) == 5  # every image has detections
    expected = {f"eval/{iou_type}_{name}": reference[iou_type][name] for iou_type in ("bbox", "segm")
                for name in STAT_NAMES}
    assert {key: sharded_metrics[key] for key in expected} == expected

    second = train_both(workdir, 5, environment)
    for outcome in second:
        assert outcome.returncode == 0, outcome.stderr[-4000:]
    assert f"resuming from step 3 ({workdir / 'checkpoints' / '3'})" in second[0].stdout
    assert "step 4/5" in second[0].stdout and "step 1/" not in second[0].stdout
    assert latest_step(workdir) == 5

    records = read_metrics(workdir)
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4, 5]
    evaluations = [r for r in records if "eval/bbox_AP" in r]
    assert [r["step"] for r in evaluations] == [2, 3, 4, 5]
    assert all(-1 <= r["eval/segm_AP"] <= 1 for r in evaluations)

    # This one-device process reads the parameters that the 8-device mesh wrote.
    params, config, class_names = latest_params(workdir)
    assert class_names == ["__background__", "square", "circle", "triangle"] and config["train"]["num_steps"] == 5
    assert params["box_predictor"]["cls_score"]["kernel"].shape == (32, 4)
