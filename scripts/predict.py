"""Detect objects in photos: one annotated PNG per image and one COCO-style results JSON for all of them.

    python scripts/predict.py --checkpoint DIR --output OUT [--score_threshold=0.5] [--overwrite] IMAGE...
        [--config FILE] [--config.key=value ...] [--compilation_cache_dir DIR] [--verbose]

The checkpoint brings its config and class names (`--config` replaces the config, `--config.key=value`
changes a field of either). Each image is preprocessed as torchvision does (resize to min/max size,
pad to a multiple of 32), so the model compiles once per padded size; compiled programs are kept in
JAX's persistent cache (~/.cache/maskrcnn_jax/jax), so later runs skip most of the compile.

Outputs keep each image's path relative to the folder that holds all the images given, extension
included, so no two collide: `a/x.jpg` and `b/x.jpg` give OUT/a/x.jpg.png and OUT/b/x.jpg.png.
OUT/detections.json is a list of {"image_id": the image's position among those predicted (1, 2, ...),
"file_name": that relative path, "category_id": label, "class_name", "bbox": [x, y, w, h], "score",
"segmentation": RLE at the original size}; it is rewritten after each image, so what is done is
kept if the run stops. `evaluate.py --results OUT/detections.json --annotations A.json` scores it:
file names are matched to A.json's images. An image that fails is reported in one line and the run
goes on (exit code 1 at the end). Memory: the model plus a few image-sized arrays, whatever the
photo's size (masks are pasted and encoded one detection at a time, within its box).
"""

import os
import pathlib
import sys
import tempfile

from absl import flags

from maskrcnn_jax.command_line import UsageError, one_line_message, run_script
from maskrcnn_jax.inference.detections_file import JsonListFile, coco_entries, output_names

RESULTS_FILE = "detections.json"


def define_flags(flag_values: flags.FlagValues) -> None:
    flags.DEFINE_string("checkpoint", None, "checkpoint directory or training workdir", required=True,
                        flag_values=flag_values)
    flags.DEFINE_string("output", None, "directory for the PNGs and detections.json", required=True,
                        flag_values=flag_values)
    flags.DEFINE_float("score_threshold", 0.5, "keep detections scoring at least this", lower_bound=0.0,
                       upper_bound=1.0, flag_values=flag_values)
    flags.register_validator("score_threshold", lambda value: value == value, "must be a number in [0, 1], not nan",
                             flag_values=flag_values)
    flags.DEFINE_bool("overwrite", False, "write into an --output that holds an earlier run's results",
                      flag_values=flag_values)


def existing_distinct_images(arguments: list[str]) -> tuple[list[pathlib.Path], int]:
    """(the image files given, each once; how many arguments are not files). Arguments that are not
    files and repeats are reported on stderr; UsageError when no file is left."""
    seen, paths, problems = set(), [], []
    for argument in arguments:
        resolved = os.path.realpath(argument)
        if not os.path.isfile(resolved):
            problems.append(f"{argument} ({'a directory' if os.path.isdir(resolved) else 'no such file'})")
        elif resolved in seen:
            print(f"warning: {argument} was given more than once; predicted once", file=sys.stderr)
        else:
            seen.add(resolved)
            paths.append(pathlib.Path(argument))
    if not paths:
        raise UsageError(f"none of the images given is a file: {', '.join(problems[:3])}"
                         + (f" and {len(problems) - 3} more" if len(problems) > 3 else ""))
    for problem in problems:
        print(f"error: {problem.replace(' (', ': ', 1).rstrip(')')}", file=sys.stderr)
    return paths, len(problems)


def prepare_output(output: pathlib.Path, overwrite: bool) -> None:
    if output.exists() and not output.is_dir():
        raise UsageError(f"--output {output} is a file; give a directory (it is created if missing)")
    if (output / RESULTS_FILE).exists() and not overwrite:
        raise UsageError(f"--output {output} already holds {RESULTS_FILE} from an earlier run: "
                         "choose another directory, or pass --overwrite")
    try:
        output.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=output).close()  # writable? (nothing is left behind)
    except OSError as error:
        raise UsageError(f"--output {output}: cannot write there ({error.strerror or error})") from None


def predict(flag_values: flags.FlagValues, positional: list[str]) -> int:
    if len(positional) < 2:
        raise UsageError("give one or more image files after the flags")
    output = pathlib.Path(flag_values.output)
    prepare_output(output, flag_values.overwrite)
    paths, missing = existing_distinct_images(positional[1:])

    from maskrcnn_jax.inference.detector import Detector, as_rgb_image  # imports JAX and the model
    from maskrcnn_jax.inference.predictor import check_prediction_config

    try:
        check_prediction_config(flag_values.config)
    except ValueError as error:
        raise UsageError(str(error)) from None
    detector = Detector.from_checkpoint(flag_values.checkpoint, config=flag_values.config,
                                        score_threshold=flag_values.score_threshold)
    names = output_names(paths)
    results = JsonListFile(output / RESULTS_FILE)
    written, failed = 0, missing
    for image_id, (path, name) in enumerate(zip(paths, names), start=1):
        try:
            image = as_rgb_image(path)
            detections = detector.detect_with_mask_windows(image)
            picture = output / f"{name}.png"
            picture.parent.mkdir(parents=True, exist_ok=True)
            detector.draw(image, detections).save(picture)
            del image
            entries = coco_entries(image_id, name, detections)
            results.extend(entries)
        except Exception as error:  # one image's failure is reported and the run goes on
            print(f"error: {path}: {one_line_message(error)}", file=sys.stderr, flush=True)
            failed += 1
            continue
        written += len(entries)
        print(f"{name}: {len(entries)} detections -> {picture}", flush=True)
    results.close()
    given = len(paths) + missing
    print(f"wrote {written} detections for {given - failed} of {given} images to {output / RESULTS_FILE}"
          + (f"; {failed} failed (listed above)" if failed else ""))
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    return run_script(predict, define_flags, argv, doc=__doc__, config_help="model config file (default: the checkpoint's)",
                      config_from_checkpoint=True, compilation_cache=True)


if __name__ == "__main__":
    sys.exit(main())
