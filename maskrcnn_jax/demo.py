"""The first run: train a config (configs/shapes_tiny.py) on the CPU, score it on its held-out split,
draw its detections and its training curves. What `make demo` runs (through scripts/demo.py).

`run_demo(config, output_dir)` writes into output_dir:
  workdir/              the training run: checkpoints/, metrics.jsonl, tensorboard/, shapes/ (the data)
  metrics.json          held-out COCO box and mask AP, as scripts/evaluate.py writes it
  per_category_ap.json  and coco_results.json, also as scripts/evaluate.py writes them
  predictions.png       held-out images with the scored detections (score >= 0.5): masks, boxes, names, scores
  training_curves.png   the training losses and the held-out AP over steps

Running it again resumes the run in output_dir/workdir (a finished run is only scored and drawn
again); delete output_dir to start over.
"""

import json
import os
import pathlib
import time
from typing import Sequence

import ml_collections
import numpy as np
from pycocotools import mask as mask_utils

from maskrcnn_jax.checkpoint import load_params
from maskrcnn_jax.drawing import draw_instances, image_grid, plot_training_curves, upscale
from maskrcnn_jax.evaluation import CocoEvaluator, CocoScores, Evaluation, write_scores
from maskrcnn_jax.inference.detector import DEFAULT_SCORE_THRESHOLD
from maskrcnn_jax.training import train_and_evaluate
from maskrcnn_jax.training.data import evaluation_data
from maskrcnn_jax.training.metric_writer import read_metrics

WORKDIR = "workdir"
PREDICTIONS_FILE = "predictions.png"
CURVES_FILE = "training_curves.png"
RESULTS_FILE = "coco_results.json"
NUM_PICTURES = 16
PICTURE_COLUMNS = 4
PICTURE_SIDE = 256  # held-out images are upscaled by a whole factor to about this side


def evaluate_held_out(config: ml_collections.ConfigDict, workdir: str | os.PathLike, params,
                      results_file: str | os.PathLike) -> Evaluation:
    """The scores and COCO results of `params` on the evaluation split of config.data (every
    detection above config.test.score_threshold), as scripts/evaluate.py scores a checkpoint; the
    results are written to `results_file`."""
    data = evaluation_data(config, workdir)
    if data is None:
        raise ValueError(f"config.data.source {config.data.source!r} has no evaluation split to score the demo on")
    evaluator = CocoEvaluator(config, data.source, data.annotation_file, results_file=results_file)
    try:
        return evaluator.evaluate(params)
    finally:
        evaluator.close()


def draw_results(records: Sequence[dict], results: list, category_names: dict,
                 score_threshold: float = DEFAULT_SCORE_THRESHOLD, side: int = PICTURE_SIDE):
    """One picture per record ({"image_id", "image" uint8 [H, W, 3]}): its COCO results scoring at
    least score_threshold (masks decoded from their RLE, boxes, category_names[category_id], scores)
    drawn on it, after both are upscaled by the whole factor that brings the long side nearest to
    `side` (small synthetic images stay readable). Draws exactly what was scored."""
    pictures = []
    for record in records:
        image = record["image"]
        kept = [r for r in results if r["image_id"] == record["image_id"] and r["score"] >= score_threshold]
        kept.sort(key=lambda r: -r["score"])
        factor = max(1, round(side / max(image.shape[:2])))
        x, y, w, h = np.array([r["bbox"] for r in kept], np.float32).reshape(-1, 4).T
        boxes = np.stack([x, y, x + w, y + h], axis=-1) * factor
        masks = np.zeros((len(kept),) + image.shape[:2], bool)
        for mask, r in zip(masks, kept):
            mask[:] = mask_utils.decode(r["segmentation"]).astype(bool)
        names = [category_names[r["category_id"]] for r in kept]
        pictures.append(draw_instances(upscale(image, factor), boxes, np.arange(len(kept)), upscale(masks, factor, (1, 2)),
                                       names, np.array([r["score"] for r in kept])))
    return pictures


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {seconds % 60:.0f} s"


def run_demo(config: ml_collections.ConfigDict, output_dir: str | os.PathLike) -> CocoScores | None:
    """Trains `config` in output_dir/workdir, scores it on the held-out split and draws (module
    docstring); returns the held-out scores, or None when a signal stopped the training early (its
    checkpoint is saved: running again resumes)."""
    start = time.perf_counter()
    output_dir = pathlib.Path(output_dir)
    workdir = output_dir / WORKDIR
    state = train_and_evaluate(config, workdir)
    if int(state.step) < config.train.num_steps:
        print(f"training stopped at step {int(state.step)} of {config.train.num_steps}; run the demo again to "
              "resume it")
        return None
    evaluation = evaluate_held_out(config, workdir, load_params(workdir), output_dir / RESULTS_FILE)
    scores, results = evaluation.scores, evaluation.results
    for iou_type, table in scores.tables.items():
        print(f"held-out {iou_type}:\n{table}")
    write_scores(scores, output_dir)

    held_out = evaluation_data(config, workdir)
    records = [held_out.source[index] for index in range(min(NUM_PICTURES, len(held_out.source)))]
    category_names = {c["id"]: c["name"] for c in json.loads(held_out.annotation_file.read_text())["categories"]}
    image_grid(draw_results(records, results, category_names), PICTURE_COLUMNS).save(output_dir / PREDICTIONS_FILE)
    plot_training_curves(read_metrics(workdir), output_dir / CURVES_FILE)

    box_ap, mask_ap = scores.metrics["bbox"]["AP"], scores.metrics["segm"]["AP"]
    print(f"held-out mask AP@[.5:.95] {mask_ap:.3f}, box AP@[.5:.95] {box_ap:.3f} on {len(held_out.source)} images "
          f"after {config.train.num_steps} steps ({_minutes(time.perf_counter() - start)} in this run)")
    print(f"wrote {output_dir}/: metrics.json, {PREDICTIONS_FILE}, {CURVES_FILE} (training run in {workdir})")
    return scores
