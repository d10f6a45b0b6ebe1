"""Periodic COCO evaluation during training, as one callable `evaluate(params) -> metrics`.

A different evaluation for one run: `train_and_evaluate(config, workdir, evaluate_fn_factory=...)`.
Every process calls it at once: each reads its own shard of the evaluation set, the batch is split
over every device of the mesh the parameters live on, and process 0 gathers the detections, scores
them once and returns the metrics (the others get None). The metrics are exactly those of one
process on one device with the same per-device batch.
"""

import math
import os
import pathlib
import time
from typing import Callable

import grain
import jax
import ml_collections
import numpy as np

from maskrcnn_jax.data import evaluation_dataset
from maskrcnn_jax.detector import make_predict_fn, spec_from_config
from maskrcnn_jax.evaluation import (
    default_host_workers,
    evaluate_model,
    load_coco_ground_truth,
    make_worker_pool,
    model_label_to_category_id,
    warm_up,
)
from maskrcnn_jax.evaluation.evaluator import describe_run, describe_timings
from maskrcnn_jax.models import build_model
from maskrcnn_jax.training.data import class_slots, evaluation_data

EvaluateFn = Callable[[dict], dict | None]
RESULTS_FILE = "evaluation/coco_results.json"  # in the workdir, with config.eval.write_results


def params_mesh(params):
    """The mesh the parameters are placed on (the trainer's), or None for host or single-device arrays."""
    sharding = getattr(jax.tree.leaves(params)[0], "sharding", None)
    return getattr(sharding, "mesh", None)


def _counting_images(batches, counts: list):
    """The batches, appending each one's number of real (valid) images to `counts`."""
    for batch in batches:
        counts.append(int(np.sum(batch["valid"])))
        yield batch


def make_coco_evaluator(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> EvaluateFn | None:
    """`evaluate(params) -> {"bbox": {"AP", ...}, "segm": {...}}` on process 0 (None on the others)
    on the evaluation set of config.data (its first config.eval.max_images images when > 0), or None
    where there is none. The global batch is config.eval.batch_size rounded up to a multiple of the
    devices; masks are pasted and encoded in config.eval.host_workers worker processes per host
    (-1: `default_host_workers`). With config.eval.write_results, process 0 writes the detections
    scored to WORKDIR/evaluation/coco_results.json (the last evaluation's). Each process prints what
    it ran on and its evaluation split."""
    data = evaluation_data(config, workdir)
    if data is None:
        return None
    source = data.source
    if config.eval.max_images > 0:
        source = grain.MapDataset.source(source)[: config.eval.max_images]
    coco_gt = load_coco_ground_truth(data.annotation_file)
    label_to_category_id = model_label_to_category_id(config.model.num_classes, data.source.label_to_category_id)
    _, class_names = class_slots(config.model.num_classes, data.source)
    predict = make_predict_fn(build_model(config), spec_from_config(config, class_names))
    workers = default_host_workers() if config.eval.host_workers < 0 else config.eval.host_workers
    results_file = pathlib.Path(workdir) / RESULTS_FILE if config.eval.write_results else None
    pool = make_worker_pool(workers)
    compiled_for = set()  # meshes predict was compiled for

    def evaluate(params) -> dict | None:
        mesh = params_mesh(params)
        devices = mesh.size if mesh is not None else 1
        batch_size = math.ceil(config.eval.batch_size / devices) * devices
        batches = evaluation_dataset(
            source, global_batch_size=batch_size, canvas_size=tuple(config.input.canvas_size),
            min_size=config.input.min_size, max_size=config.input.max_size, max_instances=config.data.max_instances,
            mask_size=config.data.mask_size, shard_index=jax.process_index(), shard_count=jax.process_count())
        compile_note = ""
        if mesh not in compiled_for:  # compiled apart, so that the split below is the evaluation's own
            start = time.perf_counter()
            warm_up(predict, params, batches, mesh)
            compiled_for.add(mesh)
            compile_note = f", compile + first batch {time.perf_counter() - start:.1f} s"
        timings, images = {}, []
        start = time.perf_counter()
        metrics = evaluate_model(predict, params, _counting_images(batches, images), coco_gt, label_to_category_id,
                                 timings=timings, pool=pool, mesh=mesh, results_file=results_file)
        print(f"{describe_run(devices, workers)}, global batch {batch_size}{compile_note}\n"
              f"{describe_timings(sum(images), timings, time.perf_counter() - start, workers)}", flush=True)
        return metrics

    return evaluate
