r"""COCO box and mask AP, of a model or of an existing COCO results file.

Score a model (writes coco_results.json, metrics.json, per_category_ap.json into --output and
prints the throughput with its breakdown per stage):
  python scripts/evaluate.py --checkpoint DIR --annotations A.json --images IMAGE_DIR --output OUT \
      [--batch_size=N] [--max_images=N] [--host_workers=N] [--per_category] [--config FILE] [--config.key=value ...]
The checkpoint brings its config (`--config` replaces it, `--config.key=value` changes a field);
detections scoring above config.test.score_threshold (0.05) are scored, on config.input.canvas_size.
Each batch is split over every device of this process (--batch_size: a multiple of them; default 2
per device); a multi-host evaluation runs inside the trainer (config.eval).
Compiled programs are kept in JAX's persistent cache (--compilation_cache_dir). Masks are pasted and
RLE-encoded in --host_workers worker processes while the model runs (default: one per core but one;
none when JAX runs on the CPU, where the model already uses every core). It prints the processes and
devices used and the evaluation split: data, model, paste, RLE, waiting for the workers, COCOeval.
Score results files from any system (several are concatenated, e.g. a bbox and a segm file):
  python scripts/evaluate.py --annotations A.json --results R.json[,R2.json] --output OUT
predict.py's detections.json is such a file: its entries' file names are matched to A.json's images.
Both files are checked before scoring: what would be scored wrongly is an error naming the entry,
what is scored but looks wrong is a counted warning.
"""

import json
import pathlib
import sys
import time

from absl import flags

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
        if not pathlib.Path(path).is_file():
            raise UsageError(f"{flag} {path}: no such file")
    if flag_values.images and not pathlib.Path(flag_values.images).is_dir():
        raise UsageError(f"--images {flag_values.images}: no such directory")
    if pathlib.Path(flag_values.output).is_file():
        raise UsageError(f"--output {flag_values.output} is a file; give a directory (it is created if missing)")


def _report(scores, output_dir: pathlib.Path, per_category: bool) -> None:
    for iou_type, table in scores.tables.items():
        print(f"IoU metric: {iou_type}\n{table}")
        if per_category:
            for name, ap in scores.per_category_ap[iou_type].items():
                print(f"  {iou_type} AP {name:>20s}: {ap:.4f}")
    from maskrcnn_jax.evaluation import write_scores

    write_scores(scores, output_dir)
    print(f"wrote {output_dir / 'metrics.json'}")


def _predict_model(flag_values: flags.FlagValues, coco_gt) -> tuple:
    """(COCO results, evaluated image ids, timings, seconds, worker count) of the model, its seconds
    after the compile; prints what it runs on."""
    import jax

    from maskrcnn_jax.inference.predictor import check_prediction_config
    from maskrcnn_jax.checkpoint import check_params_fit, load_checkpoint
    from maskrcnn_jax.data.coco import CocoSource
    from maskrcnn_jax.detector import make_predict_fn, spec_from_config
    from maskrcnn_jax.evaluation import (
        default_host_workers,
        evaluation_batches,
        make_worker_pool,
        model_label_to_category_id,
        predict_coco_results,
        warm_up,
    )
    from maskrcnn_jax.evaluation.evaluator import describe_run
    from maskrcnn_jax.models import build_model, init_params
    from maskrcnn_jax.training.mesh import make_mesh, replicated

    config = flag_values.config
    try:
        check_prediction_config(config)
    except ValueError as error:
        raise UsageError(str(error)) from None
    mesh = make_mesh()
    batch_size = flag_values.batch_size or 2 * mesh.size
    if batch_size % mesh.size:
        raise UsageError(f"--batch_size {batch_size} does not split over the {mesh.size} devices: give a multiple")
    model = build_model(config)
    params, _, class_names = load_checkpoint(flag_values.checkpoint)  # the config: flag_values.config
    check_params_fit(params, jax.eval_shape(lambda: init_params(model, jax.random.key(0))))
    params = jax.device_put(params, replicated(mesh))
    predict = make_predict_fn(model, spec_from_config(config, class_names))
    source = CocoSource(flag_values.annotations, flag_values.images)
    label_to_category_id = model_label_to_category_id(config.model.num_classes, source.label_to_category_id)
    batches, num_images = evaluation_batches(
        source, coco_gt, batch_size=batch_size, canvas_size=config.input.canvas_size,
        min_size=config.input.min_size, max_size=config.input.max_size, max_images=flag_values.max_images,
    )
    workers = default_host_workers() if flag_values.host_workers is None else flag_values.host_workers
    pool = make_worker_pool(workers)  # its workers start while the model compiles
    start = time.perf_counter()
    warm_up(predict, params, batches, mesh)
    compile_seconds = time.perf_counter() - start

    print(describe_run(mesh.size, workers))
    timings = {}
    start = time.perf_counter()
    try:
        results, image_ids = predict_coco_results(predict, params, batches, label_to_category_id, True, timings, pool,
                                                  mesh)
    finally:
        if pool is not None:
            pool.shutdown()
    seconds = time.perf_counter() - start
    print(f"{num_images} images, batch {batch_size}, canvas {tuple(config.input.canvas_size)}, "
          f"backend {jax.default_backend()}; compile + first batch {compile_seconds:.1f} s")
    if len(image_ids) < num_images:
        print(f"warning: {num_images - len(image_ids)} of {num_images} images could not be read (logged above) "
              f"and are left out of the scores", file=sys.stderr)
    return results, image_ids, timings, seconds, workers


def evaluate(flag_values: flags.FlagValues, positional: list[str]) -> int:
    _check_arguments(flag_values, positional)
    from maskrcnn_jax.evaluation import assign_image_ids, evaluate_results, load_coco_ground_truth, read_results_files

    warnings = []
    coco_gt = load_coco_ground_truth(flag_values.annotations, warnings)
    output_dir = pathlib.Path(flag_values.output)
    if flag_values.results:
        print("evaluation: process 0 of 1 scores the results files (no model, no device)")
        results, image_ids = assign_image_ids(coco_gt, read_results_files(flag_values.results)), None
    else:
        results, image_ids, timings, seconds, workers = _predict_model(flag_values, coco_gt)
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "coco_results.json").write_text(json.dumps(results))
    if not results:
        warnings.append("the results hold no detections: every AP and AR is 0 (-1 where no GT)")
    start = time.perf_counter()
    scores = evaluate_results(coco_gt, results, iou_types=None if flag_values.results else ("bbox", "segm"),
                              image_ids=image_ids)
    cocoeval_seconds = time.perf_counter() - start
    for warning in warnings + scores.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    _report(scores, output_dir, flag_values.per_category)
    if image_ids:
        from maskrcnn_jax.evaluation.evaluator import describe_timings

        timings["cocoeval"] = cocoeval_seconds
        print(describe_timings(len(image_ids), timings, seconds + cocoeval_seconds, workers))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_script(evaluate, define_flags, argv, doc=__doc__,
                      config_help="model config file (model mode; default: the checkpoint's)",
                      config_from_checkpoint=True, compilation_cache=True)


if __name__ == "__main__":
    sys.exit(main())
