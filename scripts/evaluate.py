r"""COCO box and mask AP, of a model or of an existing COCO results file.

Score a model (writes coco_results.json, metrics.json, per_category_ap.json into --output and
prints the throughput with its breakdown per stage):
  python scripts/evaluate.py --checkpoint DIR --annotations A.json --images IMAGE_DIR --output OUT \
      [--batch_size=2] [--max_images=N] [--per_category] [--config FILE] [--config.key=value ...]
The checkpoint brings its config (`--config` replaces it, `--config.key=value` changes a field);
detections scoring above config.test.score_threshold (0.05) are scored, on config.input.canvas_size.
Score results files from any system (several are concatenated, e.g. a bbox and a segm file):
  python scripts/evaluate.py --annotations A.json --results R.json[,R2.json] --output OUT
"""

import json
import pathlib
import sys
import time

import jax
from absl import app, flags

from maskrcnn_jax.checkpoint import load_params
from maskrcnn_jax.command_line import define_config_flag, run
from maskrcnn_jax.data.coco import CocoSource
from maskrcnn_jax.detector import make_predict_fn, spec_from_config
from maskrcnn_jax.evaluation import (
    evaluate_results,
    evaluation_batches,
    load_coco_ground_truth,
    model_label_to_category_id,
    pasted_canvas_size,
    predict_coco_results,
    read_results_files,
    warm_up,
    write_scores,
)
from maskrcnn_jax.evaluation.evaluator import TIMING_STAGES
from maskrcnn_jax.models import build_model

_CONFIG = define_config_flag("model config file (model mode; default: the checkpoint's)")
_ANNOTATIONS = flags.DEFINE_string("annotations", None, "COCO instances json (the ground truth)", required=True)
_OUTPUT = flags.DEFINE_string("output", None, "directory for metrics.json and the other outputs", required=True)
_RESULTS = flags.DEFINE_list("results", None, "COCO results json file(s) to score instead of a model")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "checkpoint directory or training workdir (model mode)")
_IMAGES = flags.DEFINE_string("images", None, "directory of the annotation file's images (model mode)")
_PER_CATEGORY = flags.DEFINE_bool("per_category", False, "also print AP of every category")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 2, "images per predict call (model mode)")
_MAX_IMAGES = flags.DEFINE_integer("max_images", None, "evaluate only the first N images (model mode)")


def _report(scores, output_dir: pathlib.Path, per_category: bool) -> None:
    for iou_type, table in scores.tables.items():
        print(f"IoU metric: {iou_type}\n{table}")
        if per_category:
            for name, ap in scores.per_category_ap[iou_type].items():
                print(f"  {iou_type} AP {name:>20s}: {ap:.4f}")
    write_scores(scores, output_dir)
    print(f"wrote {output_dir / 'metrics.json'}")


def _predict_model(config, coco_gt) -> tuple:
    """(COCO results, evaluated image ids, timings) of the model; prints the throughput breakdown."""
    params = jax.device_put(load_params(_CHECKPOINT.value))
    predict = make_predict_fn(build_model(config), spec_from_config(config))
    source = CocoSource(_ANNOTATIONS.value, _IMAGES.value)
    label_to_category_id = model_label_to_category_id(config.model.num_classes, source.label_to_category_id)
    canvas = pasted_canvas_size(coco_gt)
    batches, num_images = evaluation_batches(
        source, coco_gt, batch_size=_BATCH_SIZE.value, canvas_size=config.input.canvas_size,
        min_size=config.input.min_size, max_size=config.input.max_size, max_images=_MAX_IMAGES.value,
    )
    start = time.perf_counter()
    warm_up(predict, params, batches, canvas)
    compile_seconds = time.perf_counter() - start

    timings = {}
    results, image_ids = predict_coco_results(predict, params, batches, label_to_category_id, canvas, timings)
    print(f"{num_images} images, batch {_BATCH_SIZE.value}, canvas {tuple(config.input.canvas_size)}, "
          f"paste canvas {canvas}, backend {jax.default_backend()}; compile + first batch {compile_seconds:.1f} s")
    if len(image_ids) < num_images:
        print(f"warning: {num_images - len(image_ids)} of {num_images} images could not be read (logged above) "
              f"and are left out of the scores", file=sys.stderr)
    return results, image_ids, timings


def _print_throughput(num_images: int, timings: dict) -> None:
    total = sum(timings.values())
    print(f"throughput: {num_images / total:.2f} images/s ({total:.2f} s for {num_images} images)")
    for stage in TIMING_STAGES:
        seconds = timings.get(stage, 0.0)
        print(f"  {stage:>8s}: {seconds:8.2f} s  {1000 * seconds / num_images:8.1f} ms/image  {100 * seconds / total:5.1f} %")


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    model_mode = _CHECKPOINT.value or _IMAGES.value
    if _RESULTS.value and model_mode:
        raise app.UsageError("give either --results or --checkpoint and --images, not both")
    if not _RESULTS.value and not (_CHECKPOINT.value and _IMAGES.value):
        raise app.UsageError("give --results, or --checkpoint and --images")
    coco_gt = load_coco_ground_truth(_ANNOTATIONS.value)
    output_dir = pathlib.Path(_OUTPUT.value)
    if _RESULTS.value:
        try:
            results, image_ids, timings = read_results_files(_RESULTS.value), None, {}
        except ValueError as error:
            raise SystemExit(f"error: {error}")
    else:
        results, image_ids, timings = _predict_model(_CONFIG.value, coco_gt)
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "coco_results.json").write_text(json.dumps(results))
    if not results:
        print("warning: the results hold no detections; every AP and AR is 0 (-1 where no GT)", file=sys.stderr)
    start = time.perf_counter()
    try:
        scores = evaluate_results(coco_gt, results, iou_types=None if _RESULTS.value else ("bbox", "segm"),
                                  image_ids=image_ids)
    except ValueError as error:
        raise SystemExit(f"error: {error}")
    timings["cocoeval"] = time.perf_counter() - start
    _report(scores, output_dir, _PER_CATEGORY.value)
    if image_ids:
        _print_throughput(len(image_ids), timings)
    return 0


if __name__ == "__main__":
    run(main, config_from_checkpoint=True)
