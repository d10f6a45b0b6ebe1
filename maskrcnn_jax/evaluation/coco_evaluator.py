"""One way to score a model: `CocoEvaluator(config, source, annotation_file)`, built once, then
`evaluate(params)` as often as wanted (as big_vision's evaluators: built from the config and the
data, run on the parameters). The trainer's periodic evaluation (training/evaluation.py), the demo
and scripts/evaluate.py all score with it.

It owns what every scoring needs and might otherwise assemble differently:
  the images     the source's, its first config.eval.max_images when > 0
  the batches    config.eval.batch_size rounded up to a multiple of the devices the parameters live
                 on, each on one canvas of `evaluation_canvases` (one per orientation: grouped as
                 training groups them); the ground truth padded to the most instances of any image of
                 the annotation file, so that none is dropped (COCOeval reads the ground truth from the file)
  the labels     the model's class slots for the dataset's labels (`class_slots`)
  the model      predict of the config's model, its class slots named by the dataset (or the
                 caller's predict, e.g. a checkpoint's `Predictor.predict`)
  the host work  config.eval.host_workers processes for mask paste + RLE (-1: `default_host_workers`)
  the results    written to `results_file` when given, then scored; returned with the scores
Each call prints what it ran on (processes, devices, batch, canvas, compile) and its split per stage.

Several processes: every process builds one and calls `evaluate` at once with the parameters placed
on the trainer's mesh; each reads its own shard of the set and process 0 gets the scores.
"""

import math
import os
import sys
import time

import jax
import ml_collections
import numpy as np

from maskrcnn_jax.data.pipeline import evaluation_dataset
from maskrcnn_jax.detector import make_predict_fn, spec_from_config
from maskrcnn_jax.evaluation.class_slots import class_slots
from maskrcnn_jax.evaluation.coco_metrics import load_coco_ground_truth
from maskrcnn_jax.evaluation.evaluator import Evaluation, describe_run, describe_timings, score_model, warm_up
from maskrcnn_jax.evaluation.host_workers import default_host_workers, make_worker_pool
from maskrcnn_jax.models import build_model


def params_mesh(params):
    """The mesh the parameters are placed on (e.g. the trainer's), or None for host or single-device arrays."""
    sharding = getattr(jax.tree.leaves(params)[0], "sharding", None)
    return getattr(sharding, "mesh", None)


def evaluation_canvases(config: ml_collections.ConfigDict) -> list[tuple[int, int]]:
    """The canvases (Hc, Wc) evaluation batches are grouped by, one compiled predict each:
    config.eval.canvases (e.g. one per orientation), or when empty (or absent, as in configs written
    before it) the one config.input.canvas_size."""
    canvases = [tuple(int(side) for side in canvas) for canvas in config.eval.get("canvases", ())]
    return canvases or [tuple(config.input.canvas_size)]


class _FirstRecords:
    """The first `count` records of a source, keeping its `image_size` (grouping by canvas reads it)."""

    def __init__(self, source, count: int):
        self.source, self.count = source, min(count, len(source))

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int):
        if not 0 <= index < self.count:
            raise IndexError(index)
        return self.source[index]

    def image_size(self, index: int) -> tuple[int, int]:
        return self.source.image_size(index)


def _counting_images(batches, counts: list):
    """The batches, appending each one's number of real (valid) images to `counts`."""
    for batch in batches:
        counts.append(int(np.sum(batch["valid"])))
        yield batch


class CocoEvaluator:
    """COCO box and mask AP of a model's parameters on one annotated dataset (module docstring)."""

    def __init__(self, config: ml_collections.ConfigDict, source, annotation_file: str | os.PathLike, *,
                 predict_fn=None, results_file: str | os.PathLike | None = None):
        """config: the model's (config.model, input, test, data.mask_size, eval); source: the records
        (e.g. `data.CocoSource`) of `annotation_file`, the COCO json that scores them; predict_fn:
        jitted predict(params, batch) (default: the config's model, `detector.make_predict_fn`).
        Raises ValueError when no label mapping fits the model's class count, DatasetFileError for a
        bad annotation file."""
        self.config = config
        self.slots = class_slots(config.model.num_classes, source)
        self.source = _FirstRecords(source, config.eval.max_images) if config.eval.max_images > 0 else source
        self.canvases = evaluation_canvases(config)
        self.warnings = []  # the annotation file's counted problems (`load_coco_ground_truth`)
        self.coco_gt = load_coco_ground_truth(annotation_file, self.warnings)
        self.max_instances = max([len(annotations) for annotations in self.coco_gt.imgToAnns.values()] + [1])
        self.predict = predict_fn or make_predict_fn(build_model(config), spec_from_config(config, self.slots.class_names))
        self.workers = default_host_workers() if config.eval.host_workers < 0 else config.eval.host_workers
        self.pool = make_worker_pool(self.workers)  # its workers start while the model compiles
        self.results_file = results_file
        self._compiled_for = set()  # meshes predict was compiled for

    def evaluate(self, params) -> Evaluation | None:
        """The scores and results of `params` (host arrays, or device arrays on a mesh, each batch then
        split over its "data" axis) on process 0; None on the others."""
        config = self.config
        mesh = params_mesh(params)
        devices = mesh.size if mesh is not None else 1
        batch_size = math.ceil(config.eval.batch_size / devices) * devices
        batches = evaluation_dataset(
            self.source, global_batch_size=batch_size, canvas_size=self.canvases[0], canvases=self.canvases,
            min_size=config.input.min_size, max_size=config.input.max_size, max_instances=self.max_instances,
            mask_size=config.data.mask_size, shard_index=jax.process_index(), shard_count=jax.process_count())
        compile_note = ""
        if mesh not in self._compiled_for:  # compiled apart, so that the split below is the evaluation's own
            start = time.perf_counter()
            warm_up(self.predict, params, batches, mesh, self.canvases)
            self._compiled_for.add(mesh)
            compile_note = f", compile + first batch {time.perf_counter() - start:.1f} s"
        timings, images = {}, []
        start = time.perf_counter()
        evaluation = score_model(self.predict, params, _counting_images(batches, images), self.coco_gt,
                                 self.slots.category_ids, timings=timings, pool=self.pool, mesh=mesh,
                                 results_file=self.results_file)
        print(f"{describe_run(devices, self.workers)}, global batch {batch_size}, "
              f"canvas{'es' if len(self.canvases) > 1 else ''} {', '.join(map(str, self.canvases))}{compile_note}\n"
              f"{describe_timings(sum(images), timings, time.perf_counter() - start, self.workers)}", flush=True)
        if evaluation is not None and len(evaluation.image_ids) < len(self.source):
            print(f"warning: {len(self.source) - len(evaluation.image_ids)} of {len(self.source)} images could not "
                  "be read (logged above) and are left out of the scores", file=sys.stderr)
        return evaluation

    def close(self) -> None:
        """Stops the worker processes."""
        if self.pool is not None:
            self.pool.shutdown()
