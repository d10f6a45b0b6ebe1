"""Two local processes of 4 fake CPU devices each, joined with jax.distributed on 127.0.0.1 through
scripts/train.py's multi-host flags: they train 3 steps on one 8-device mesh, checkpoint (each
its own data-iterator state) and evaluate together (at step 2, mid-run, and at the end: each process
its shard of the evaluation set, the batch split over all 8 devices, process 0 scoring); started
again, both resume from step 3. The step-3 evaluation equals one process on one device exactly.
Each process records its image ids of every step (config.train.record_image_ids): the two halves
of each global batch are disjoint and every two steps make one epoch; the logged losses of steps 1
and 4 (after the resume) equal one process's `loss_fn` on the gathered global batch.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import cpu_devices_flags
from maskrcnn_jax.checkpoint import latest_params, latest_step, load_metadata
from maskrcnn_jax.evaluation import STAT_NAMES, class_slots
from maskrcnn_jax.models import platform_config
from maskrcnn_jax.training import make_mesh
from maskrcnn_jax.training import data as data_lib
from maskrcnn_jax.training.evaluation import RESULTS_FILE, make_coco_evaluator
from maskrcnn_jax.training.image_id_log import read_image_ids
from maskrcnn_jax.training.loss import loss_fn_from_config
from maskrcnn_jax.training.metric_writer import read_metrics
from maskrcnn_jax.training.setup import training_program
from maskrcnn_jax.training.state import create_train_state

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
             "--config.eval.write_results=true", "--config.train.record_image_ids=true"],
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
    return {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": cpu_devices_flags(4),
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
    params_after_step_3 = params
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
    check_image_ids_and_losses(workdir, {r["step"]: r for r in records if "loss" in r},
                               {1: None, 4: params_after_step_3})
    evaluations = [r for r in records if "eval/bbox_AP" in r]
    assert [r["step"] for r in evaluations] == [2, 3, 4, 5]
    assert all(-1 <= r["eval/segm_AP"] <= 1 for r in evaluations)

    # This one-device process reads the parameters that the 8-device mesh wrote.
    params, config, class_names = latest_params(workdir)
    assert class_names == ["__background__", "square", "circle", "triangle"] and config["train"]["num_steps"] == 5
    assert params["box_predictor"]["cls_score"]["kernel"].shape == (32, 4)


def check_image_ids_and_losses(workdir, logged: dict, params_before: dict):
    """Steps 1-5 of 8 images (two processes of 4) over the 16 training images (2 steps an epoch): per
    step, the image ids the two processes recorded are disjoint, and every two steps together hold
    each training image once. The batches each process read, rebuilt here from the config
    (`training_iterator` of its shard), have the recorded ids; for each step s in params_before, one
    process's loss_fn on the gathered global batch (process 0's rows first, as on the mesh), with
    the parameters before the step (None: the seed's initial ones) and the step's key, gives the
    logged loss (within float32 summation order: 8 devices against 1) and sample counts."""
    recorded = [read_image_ids(workdir, index, 2) for index in range(2)]
    for records in recorded:
        assert [record["step"] for record in records] == [1, 2, 3, 4, 5]
    annotations = json.loads((workdir / "shapes" / "train" / "annotations.json").read_text())
    training_ids = sorted({annotation["image_id"] for annotation in annotations["annotations"]})
    assert len(training_ids) == 16
    halves = [[record["image_id"] for record in records] for records in recorded]
    for step in range(5):
        assert len(halves[0][step]) == len(halves[1][step]) == 4
        assert not set(halves[0][step]) & set(halves[1][step]), step + 1
    for epoch_start in (0, 2):  # steps 1-2 and 3-4 (the second epoch spans the resume)
        epoch = [i for step in (epoch_start, epoch_start + 1) for half in halves for i in half[step]]
        assert sorted(epoch) == training_ids, epoch_start // 2 + 1

    config, _ = load_metadata(workdir)
    config = platform_config(config, "cpu")
    source = data_lib.training_source(config, workdir)
    label_slots = class_slots(config.model.num_classes, source).label_slots
    iterators = [data_lib.training_iterator(config, source, shard_index=index, shard_count=2) for index in range(2)]
    batches = {step: [next(iterator) for iterator in iterators] for step in range(1, max(params_before) + 1)}
    for step, pair in batches.items():
        assert [list(batch["image_id"]) for batch in pair] == [half[step - 1] for half in halves], step

    mesh = make_mesh(jax.devices()[:1])
    initialize = training_program(config, mesh, loss_fn_from_config).initialize
    initial = create_train_state(initialize, config.train.seed, mesh)
    loss_fn = jax.jit(loss_fn_from_config(config))
    for step, params in params_before.items():
        batch = {key: np.concatenate([half[key] for half in batches[step]]) for key in batches[step][0]
                 if key != "image_id"}
        batch["gt_classes"] = label_slots[batch["gt_classes"]]
        key = jax.random.fold_in(jax.random.wrap_key_data(initial.key), step - 1)
        loss, metrics = loss_fn(initial.params if params is None else params, batch, key)
        print(f"step {step}: logged loss {logged[step]['loss']:.7f}, one process {float(loss):.7f}")
        np.testing.assert_allclose(float(loss), logged[step]["loss"], rtol=1e-6)
        for name in ("positive_anchors", "sampled_anchors", "positive_rois", "sampled_rois", "gt_per_image"):
            assert float(metrics[name]) == logged[step][name], (step, name)
