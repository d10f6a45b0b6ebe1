"""Periodic COCO evaluation during training, as one callable `evaluate(params) -> metrics`.

A different evaluation for one run: `train_and_evaluate(config, workdir, evaluate_fn_factory=...)`.
Every process calls it at once: each reads its own shard of the evaluation set, the batch is split
over every device of the mesh the parameters live on, and process 0 gathers the detections, scores
them once and returns the metrics (the others get None). The metrics are exactly those of one
process on one device with the same per-device batch. The scoring is `evaluation.CocoEvaluator`'s.
"""

import os
from typing import Callable

import ml_collections
from etils import epath

from maskrcnn_jax.evaluation import CocoEvaluator
from maskrcnn_jax.training.data import evaluation_data

EvaluateFn = Callable[[dict], dict | None]
RESULTS_FILE = "evaluation/coco_results.json"  # in the workdir, with config.eval.write_results


def make_coco_evaluator(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> EvaluateFn | None:
    """`evaluate(params) -> {"bbox": {"AP", ...}, "segm": {...}}` on process 0 (None on the others)
    on the evaluation set of config.data (config.eval sets the images, batch and host workers: see
    `CocoEvaluator`), or None where there is none. With config.eval.write_results, process 0 writes
    the detections scored to WORKDIR/evaluation/coco_results.json (the last evaluation's). Each
    process prints what it ran on and its evaluation split."""
    data = evaluation_data(config, workdir)
    if data is None:
        return None
    results_file = epath.Path(workdir) / RESULTS_FILE if config.eval.write_results else None
    evaluator = CocoEvaluator(config, data.source, data.annotation_file, results_file=results_file)

    def evaluate(params) -> dict | None:
        evaluation = evaluator.evaluate(params)
        return None if evaluation is None else evaluation.scores.metrics

    return evaluate
