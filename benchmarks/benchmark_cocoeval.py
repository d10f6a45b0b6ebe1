"""Time COCO scoring: pycocotools' COCOeval against faster-coco-eval's C++ COCOeval_faster (a PyPI
package this project does not depend on: install it, or put its unpacked wheel on PYTHONPATH).

    .venv/bin/python benchmarks/benchmark_cocoeval.py --annotations A.json --results R.json --iou_type segm

Each scores the same results (evaluate + accumulate + summarize, best of --repeats); prints both
times and the largest difference between their 12 stats.
"""

import contextlib
import copy
import io
import json
import sys
import time

import numpy as np
from absl import flags
from faster_coco_eval import COCO as FasterCOCO
from faster_coco_eval import COCOeval_faster
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from maskrcnn_jax.command_line import UsageError, run_script


def score(coco_class, eval_class, annotations: str, results: list, iou_type: str, repeats: int) -> tuple:
    """(best seconds of evaluate + accumulate + summarize, the 12 stats)."""
    times = []
    for _ in range(repeats):
        with contextlib.redirect_stdout(io.StringIO()):
            ground_truth = coco_class(annotations)
            evaluator = eval_class(ground_truth, ground_truth.loadRes(copy.deepcopy(results)), iou_type)
            start = time.perf_counter()
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        times.append(time.perf_counter() - start)
    return min(times), np.array(evaluator.stats[:12])


def define_flags(flag_values: flags.FlagValues) -> None:
    flags.DEFINE_string("annotations", None, "COCO ground truth json", required=True, flag_values=flag_values)
    flags.DEFINE_string("results", None, "COCO results json", required=True, flag_values=flag_values)
    flags.DEFINE_enum("iou_type", "segm", ["bbox", "segm"], "what is scored", flag_values=flag_values)
    flags.DEFINE_integer("repeats", 3, "timed runs of each; the best is reported", flag_values=flag_values)


def compare(args: flags.FlagValues, positional: list[str]) -> None:
    if len(positional) > 1:
        raise UsageError(f"unexpected arguments: {' '.join(positional[1:])}")
    results = json.loads(open(args.results).read())
    if args.iou_type == "segm":  # mask areas size the detections, as evaluate.py scores them
        results = [{key: value for key, value in r.items() if key != "bbox"} for r in results]
    reference, reference_stats = score(COCO, COCOeval, args.annotations, results, args.iou_type, args.repeats)
    faster, faster_stats = score(FasterCOCO, COCOeval_faster, args.annotations, results, args.iou_type, args.repeats)
    print(f"{len(results)} detections, {args.iou_type}: pycocotools {reference:.2f} s, faster-coco-eval {faster:.2f} s "
          f"({reference / faster:.1f}x); largest stat difference {np.abs(reference_stats - faster_stats).max():.1e}; "
          f"AP {reference_stats[0]:.4f}")


def main(argv: list[str] | None = None) -> int:
    return run_script(compare, define_flags, argv, doc=__doc__)


if __name__ == "__main__":
    sys.exit(main())
