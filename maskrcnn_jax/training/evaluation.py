"""Periodic COCO evaluation during training, as one callable `evaluate(params) -> metrics`.

A different evaluation for one run: `train_and_evaluate(config, workdir, evaluate_fn_factory=...)`.
The evaluation runs on process 0 alone, on one local device, with a copy of the replicated
parameters; the other processes go on to the next step and wait for it there.
"""

import os
from typing import Callable

import grain
import jax
import ml_collections

from maskrcnn_jax.data import evaluation_dataset
from maskrcnn_jax.detector import make_predict_fn, spec_from_config
from maskrcnn_jax.evaluation import evaluate_model, load_coco_ground_truth, model_label_to_category_id
from maskrcnn_jax.models import build_model
from maskrcnn_jax.training.data import class_slots, evaluation_data

EvaluateFn = Callable[[dict], dict]


def local_copy(params):
    """The replicated parameters as arrays on this process's first device (no cross-process use)."""
    return jax.tree.map(lambda leaf: leaf.addressable_data(0), params)


def make_coco_evaluator(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> EvaluateFn | None:
    """`evaluate(params) -> {"bbox": {"AP", ...}, "segm": {...}}` on the evaluation set of config.data
    (its first config.eval.max_images images when > 0), or None where there is none."""
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
    options = dict(global_batch_size=config.eval.batch_size, canvas_size=tuple(config.input.canvas_size),
                   min_size=config.input.min_size, max_size=config.input.max_size,
                   max_instances=config.data.max_instances, mask_size=config.data.mask_size,
                   shard_index=0, shard_count=1)

    def evaluate(params) -> dict:
        return evaluate_model(predict, local_copy(params), evaluation_dataset(source, **options), coco_gt,
                              label_to_category_id)

    return evaluate
