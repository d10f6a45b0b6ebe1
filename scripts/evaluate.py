r"""COCO box and mask AP, of a model or of an existing COCO results file.

Score a model (writes coco_results.json, metrics.json, per_category_ap.json into --output and
prints the throughput with its breakdown per stage):
  python scripts/evaluate.py --checkpoint DIR --annotations A.json --images IMAGE_DIR --output OUT \
      [--batch_size=N] [--max_images=N] [--host_workers=N] [--per_category] [--config FILE] [--config.key=value ...]
The checkpoint brings its config (`--config` replaces it, `--config.key=value` changes a field);
detections scoring above config.test.score_threshold (0.05) are scored, batches on the config's
evaluation canvases (config.eval.canvases, one per orientation; empty: config.input.canvas_size).
Each batch is split over every device of this process (--batch_size: a multiple of them; default 2
per device); a multi-host evaluation runs inside the trainer (config.eval).
Compiled programs are kept in JAX's persistent cache (--compilation_cache_dir). Masks are pasted and
RLE-encoded in --host_workers worker processes while the model runs (default: one per core but one;
none when JAX runs on the CPU, where the model already uses every core). It prints the processes and
devices used and the evaluation split: data, model, paste, RLE, waiting for the workers, COCOeval.
--checkpoint, --results and --output may be URIs (gs://bucket/run: docs/object_store.md); the
annotations and images are read from local files.
Score results files from any system (several are concatenated, e.g. a bbox and a segm file):
  python scripts/evaluate.py --annotations A.json --results R.json[,R2.json] --output OUT
predict.py's detections.json is such a file: its entries' file names are matched to A.json's images.
Both files are checked before scoring: what would be scored wrongly is an error naming the entry,
what is scored but looks wrong is a counted warning.
"""

import sys

from absl import flags
from etils import epath

from maskrcnn_jax.command_line import UsageError, run_script


def define_flags(flag_values: flags.FlagValues) -> None:
    def define(kind, name, default, help_string, **kwargs):
        getattr(flags, f"DEFINE_{kind}")(name, default, help_string, flag_values=flag_values, **kwargs)

    define("string", "annotations", None, "COCO instances json (the ground truth)", required=True)
    define("string", "output", None, "directory for metrics.json and the other outputs", required=True)
    define("list", "results", None, "COCO results json file(s) to score instead of a model")
    define("string", "checkpoint", None, "checkpoint directory or training workdir (model mode)")
    define("string", "images", None, "directory of the annotation file's images (model mode)")
    define("bool", "per_category", False, "also print AP of every category")
    define("integer", "batch_size", None, "images per predict call, split over the devices (model mode; "
           "default 2 per device)", lower_bound=1)
    define("integer", "max_images", None, "evaluate only the first N images (model mode)", lower_bound=1)
    define("integer", "host_workers", None, "worker processes that paste and RLE-encode masks while the model runs "
           "(model mode; 0: this process; default: one per core but one, none when JAX runs on the CPU)",
           lower_bound=0)


def _check_arguments(flag_values: flags.FlagValues, positional: list[str]) -> None:
    if len(positional) > 1:
        raise UsageError(f"unexpected arguments: {' '.join(positional[1:])}")
    model_mode = flag_values.checkpoint or flag_values.images
    if flag_values.results and model_mode:
        raise UsageError("give either --results, or --checkpoint and --images, not both")
    if not flag_values.results and not (flag_values.checkpoint and flag_values.images):
        raise UsageError("give --results, or --checkpoint and --images")
    paths = [("--annotations", flag_values.annotations)] + [("--results", path) for path in flag_values.results or []]
    for flag, path in paths:
        if not epath.Path(path).is_file():
            raise UsageError(f"{flag} {path}: no such file")
    if flag_values.images and not epath.Path(flag_values.images).is_dir():
        raise UsageError(f"--images {flag_values.images}: no such directory")
    if epath.Path(flag_values.output).is_file():
        raise UsageError(f"--output {flag_values.output} is a file; give a directory (it is created if missing)")


def _report(scores, warnings: list, output_dir: epath.Path, per_category: bool) -> None:
    from maskrcnn_jax.evaluation import write_scores

    for warning in warnings + scores.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for iou_type, table in scores.tables.items():
        print(f"IoU metric: {iou_type}\n{table}")
        if per_category:
            for name, ap in scores.per_category_ap[iou_type].items():
                print(f"  {iou_type} AP {name:>20s}: {ap:.4f}")
    write_scores(scores, output_dir)
    print(f"wrote {output_dir / 'metrics.json'}")


def _score_results(flag_values: flags.FlagValues) -> tuple:
    """(scores, warnings) of the results files."""
    from maskrcnn_jax.evaluation import assign_image_ids, evaluate_results, load_coco_ground_truth, read_results_files

    warnings = []
    coco_gt = load_coco_ground_truth(flag_values.annotations, warnings)
    print("evaluation: process 0 of 1 scores the results files (no model, no device)")
    results = assign_image_ids(coco_gt, read_results_files(flag_values.results))
    if not results:
        warnings.append("the results hold no detections: every AP and AR is 0 (-1 where no GT)")
    return evaluate_results(coco_gt, results), warnings


def _score_model(flag_values: flags.FlagValues, output_dir: epath.Path) -> tuple:
    """(scores, warnings) of the checkpoint's model, on every device of this process."""
    from maskrcnn_jax.data.coco import CocoSource
    from maskrcnn_jax.evaluation import CocoEvaluator
    from maskrcnn_jax.inference.predictor import check_prediction_config, load_predictor
    from maskrcnn_jax.training.mesh import make_mesh, replicated

    config = flag_values.config.copy_and_resolve_references()
    try:
        check_prediction_config(config)
    except ValueError as error:
        raise UsageError(str(error)) from None
    mesh = make_mesh()
    config.eval.batch_size = flag_values.batch_size or 2 * mesh.size
    if config.eval.batch_size % mesh.size:
        raise UsageError(f"--batch_size {config.eval.batch_size} does not split over the {mesh.size} devices: "
                         "give a multiple")
    config.eval.max_images = flag_values.max_images or 0
    config.eval.host_workers = -1 if flag_values.host_workers is None else flag_values.host_workers
    predictor = load_predictor(flag_values.checkpoint, config, sharding=replicated(mesh))
    evaluator = CocoEvaluator(predictor.config, CocoSource(flag_values.annotations, flag_values.images),
                              flag_values.annotations, predict_fn=predictor.predict,
                              results_file=output_dir / "coco_results.json")
    try:
        evaluation = evaluator.evaluate(predictor.params)
    finally:
        evaluator.close()
    warnings = list(evaluator.warnings)
    if not evaluation.results:
        warnings.append("the results hold no detections: every AP and AR is 0 (-1 where no GT)")
    return evaluation.scores, warnings


def evaluate(flag_values: flags.FlagValues, positional: list[str]) -> int:
    _check_arguments(flag_values, positional)
    output_dir = epath.Path(flag_values.output)
    if flag_values.results:
        scores, warnings = _score_results(flag_values)
    else:
        scores, warnings = _score_model(flag_values, output_dir)
    _report(scores, warnings, output_dir, flag_values.per_category)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_script(evaluate, define_flags, argv, doc=__doc__,
                      config_help="model config file (model mode; default: the checkpoint's)",
                      config_from_checkpoint=True, compilation_cache=True)


if __name__ == "__main__":
    sys.exit(main())
