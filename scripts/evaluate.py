"""COCO box and mask AP, of a model or of an existing COCO results file.

Score a model (writes coco_results.json, metrics.json, per_category_ap.json into --output and
prints the throughput with its breakdown per stage):
  python scripts/evaluate.py --config configs/mask_rcnn_r50_fpn_coco.py --checkpoint DIR \
      --annotations A.json --images DIR --output DIR [--batch-size B] [--max-images N] [--set key=value]
Score a results file from any system (several files are concatenated, e.g. a bbox and a segm file):
  python scripts/evaluate.py --annotations A.json --results R.json --output DIR

A checkpoint converted from a torchvision model built with weights=None needs
`--set model.backbone.bn_eps=1e-5` (see scripts/convert_torchvision.py).
"""

import argparse
import json
import pathlib
import sys
import time

import grain
import jax

from maskrcnn_jax.checkpoint import load_params
from maskrcnn_jax.config_file import load_config
from maskrcnn_jax.data.coco import CocoSource
from maskrcnn_jax.data.pipeline import evaluation_dataset
from maskrcnn_jax.evaluation.coco_metrics import evaluate_results, load_coco_ground_truth
from maskrcnn_jax.evaluation.evaluator import TIMING_STAGES, model_label_to_category_id, predict_coco_results
from maskrcnn_jax.evaluation.mask_pasting import make_binary_mask_paster, pasted_canvas_size
from maskrcnn_jax.inference import make_predict_fn
from maskrcnn_jax.models import build_model


def _parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--annotations", required=True, help="COCO instances json (the ground truth)")
    parser.add_argument("--output", required=True, help="directory for metrics.json and the other outputs")
    parser.add_argument("--results", nargs="+", help="COCO results json file(s) to score instead of a model")
    parser.add_argument("--config", help="config file with get_config() (model mode)")
    parser.add_argument("--checkpoint", help="Orbax params directory (model mode)")
    parser.add_argument("--images", help="directory of the annotation file's images (model mode)")
    parser.add_argument("--per-category", action="store_true", help="also print AP of every category")
    parser.add_argument("--batch-size", type=int, default=2, help="images per predict call (model mode)")
    parser.add_argument("--max-images", type=int, help="evaluate only the first N images (model mode)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, repeatable")
    args = parser.parse_args(argv)
    model_mode = args.config or args.checkpoint or args.images
    if args.results and model_mode:
        parser.error("give either --results or --config/--checkpoint/--images, not both")
    if not args.results and not (args.config and args.checkpoint and args.images):
        parser.error("give --results, or all of --config, --checkpoint and --images")
    return args


def _read_results(paths) -> list:
    results = []
    for path in paths:
        try:
            with open(path) as f:
                loaded = json.load(f)
        except (OSError, json.JSONDecodeError) as error:
            raise SystemExit(f"error: cannot read results file {path}: {error}")
        if not isinstance(loaded, list):
            raise SystemExit(f"error: {path} is not a COCO results file (a json list of detections)")
        results.extend(loaded)
    return results


def _report(scores, output_dir: pathlib.Path, per_category: bool) -> None:
    for iou_type, table in scores.tables.items():
        print(f"IoU metric: {iou_type}\n{table}")
        if per_category:
            for name, ap in scores.per_category_ap[iou_type].items():
                print(f"  {iou_type} AP {name:>20s}: {ap:.4f}")
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "metrics.json").write_text(json.dumps(scores.metrics, indent=1))
    (output_dir / "per_category_ap.json").write_text(json.dumps(scores.per_category_ap, indent=1))
    print(f"wrote {output_dir / 'metrics.json'}")


def _evaluation_batches(args, config, source, coco_gt):
    if args.max_images is not None:
        source = grain.MapDataset.source(source)[: args.max_images]
    # COCOeval reads the GT from the annotation file, but the pipeline pads it too: room for every
    # instance means none is dropped (and logged as dropped).
    max_instances = max([len(annotations) for annotations in coco_gt.imgToAnns.values()] + [1])
    return evaluation_dataset(
        source,
        global_batch_size=args.batch_size,
        canvas_size=tuple(config.input.canvas_size),
        min_size=config.input.min_size,
        max_size=config.input.max_size,
        max_instances=max_instances,
    ), len(source)


def _predict_model(args, coco_gt) -> tuple:
    """(COCO results, evaluated image ids, timings) of the model; prints the throughput breakdown."""
    config = load_config(args.config, args.set)
    model = build_model(config)
    params = jax.device_put(load_params(args.checkpoint))
    predict = make_predict_fn(model, config)
    source = CocoSource(args.annotations, args.images)
    label_to_category_id = model_label_to_category_id(config.model.num_classes, source.label_to_category_id)
    canvas = pasted_canvas_size(coco_gt)
    batches, num_images = _evaluation_batches(args, config, source, coco_gt)

    # Compile predict and the paster on the first batch, so the timings below are steady-state.
    start = time.perf_counter()
    first = next(iter(batches))
    outputs = predict(params, first["image"], first["image_size"], first["original_size"])
    jax.block_until_ready(make_binary_mask_paster(*canvas)(outputs["masks"], outputs["boxes"]))
    compile_seconds = time.perf_counter() - start

    timings = {}
    results, image_ids = predict_coco_results(predict, params, batches, label_to_category_id, canvas, timings)
    print(f"{num_images} images, batch {args.batch_size}, canvas {tuple(config.input.canvas_size)}, "
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


def main(argv=None) -> int:
    args = _parse_args(argv)
    coco_gt = load_coco_ground_truth(args.annotations)
    output_dir = pathlib.Path(args.output)
    if args.results:
        results, image_ids, timings = _read_results(args.results), None, {}
    else:
        results, image_ids, timings = _predict_model(args, coco_gt)
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "coco_results.json").write_text(json.dumps(results))
    if not results:
        print("warning: the results hold no detections; every AP and AR is 0 (-1 where no GT)", file=sys.stderr)
    start = time.perf_counter()
    try:
        scores = evaluate_results(coco_gt, results, iou_types=None if args.results else ("bbox", "segm"),
                                  image_ids=image_ids)
    except ValueError as error:
        raise SystemExit(f"error: {error}")
    timings["cocoeval"] = time.perf_counter() - start
    _report(scores, output_dir, args.per_category)
    if image_ids:
        _print_throughput(len(image_ids), timings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
