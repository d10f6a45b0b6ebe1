"""COCO box and mask AP, of a model or of an existing COCO results file.

Score a model (writes coco_results.json, metrics.json, per_category_ap.json into --output):
  python scripts/evaluate.py --config configs/mask_rcnn_r50_fpn_coco.py --checkpoint DIR \
      --annotations A.json --images DIR --output DIR
Score a results file from any system (several files are concatenated, e.g. a bbox and a segm file):
  python scripts/evaluate.py --annotations A.json --results R.json --output DIR
"""

import argparse
import json
import pathlib
import sys

from maskrcnn_jax.evaluation.coco_metrics import evaluate_results, load_coco_ground_truth


def _parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--annotations", required=True, help="COCO instances json (the ground truth)")
    parser.add_argument("--output", required=True, help="directory for metrics.json and the other outputs")
    parser.add_argument("--results", nargs="+", help="COCO results json file(s) to score instead of a model")
    parser.add_argument("--config", help="config file with get_config() (model mode)")
    parser.add_argument("--checkpoint", help="Orbax params directory (model mode)")
    parser.add_argument("--images", help="directory of the annotation file's images (model mode)")
    parser.add_argument("--per-category", action="store_true", help="also print AP of every category")
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
        with open(path) as f:
            loaded = json.load(f)
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


def main(argv=None) -> int:
    args = _parse_args(argv)
    coco_gt = load_coco_ground_truth(args.annotations)
    output_dir = pathlib.Path(args.output)
    results = _read_results(args.results)
    if not results:
        print("warning: the results hold no detections; every AP and AR is 0 (-1 where no GT)", file=sys.stderr)
    try:
        scores = evaluate_results(coco_gt, results)
    except ValueError as error:
        raise SystemExit(f"error: {error}")
    _report(scores, output_dir, args.per_category)
    return 0


if __name__ == "__main__":
    sys.exit(main())
