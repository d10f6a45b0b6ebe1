"""Export a checkpoint's detector to one portable file: serve it without this repository (or Flax).

    python scripts/export.py --checkpoint DIR --output model.jaxexport [--canvas HxW ...]
        [--platforms cpu,cuda,tpu] [--input_dtype uint8|float32] [--config FILE] [--config.key=value ...]
        [--overwrite] [--verbose]

The whole predict path (resized uint8 photos normalised on the device, backbone, RPN, proposals, heads,
post-processing; fixed-size outputs with `valid`) is exported with `jax.export` once per canvas, with
a symbolic batch: one artifact serves any batch size. The parameters are the programs' first
argument, stored once in the artifact (not constants in each program). model.jaxexport is a zip
(see maskrcnn_jax/export/artifact.py); model.json beside it describes the inputs, outputs, canvases,
class names, preprocessing (resize rule, mean, std) and the jax version it needs. Canvases default
to one per orientation that holds every resized photo (800x1344 and 1344x800 for the COCO recipe).

Run it with `Detector.from_exported("model.jaxexport")` or, with only jax, numpy and pillow,
`python examples/serve_exported.py --model model.jaxexport --output detections.json IMAGE...`.
"""

import pathlib
import re
import sys
import time

from absl import flags

from maskrcnn_jax.command_line import UsageError, run_script

PLATFORMS = ("cpu", "cuda", "rocm", "tpu")


def define_flags(flag_values: flags.FlagValues) -> None:
    flags.DEFINE_string("checkpoint", None, "checkpoint directory or training workdir", required=True,
                        flag_values=flag_values)
    flags.DEFINE_string("output", None, "the artifact to write, e.g. model.jaxexport (its .json is written beside it)",
                        required=True, flag_values=flag_values)
    flags.DEFINE_multi_string("canvas", [], "a canvas HxW, e.g. 800x1344 (repeat for more); default: one per "
                              "orientation holding every resized photo", flag_values=flag_values)
    flags.DEFINE_list("platforms", ["cpu", "cuda"], f"platforms the artifact runs on, of {', '.join(PLATFORMS)}",
                      flag_values=flag_values)
    flags.DEFINE_enum("input_dtype", "uint8", ["uint8", "float32"], "the program's image input: the resized photo "
                      "rounded to bytes (a quarter of the transfer), or unrounded (exactly the checkpoint Detector's "
                      "input)", flag_values=flag_values)
    flags.DEFINE_bool("overwrite", False, "replace an existing --output", flag_values=flag_values)


def parse_canvas(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)x(\d+)", text)
    if not match or 0 in (int(match.group(1)), int(match.group(2))):
        raise UsageError(f"--canvas {text}: expected HxW with positive integers, e.g. 800x1344")
    return int(match.group(1)), int(match.group(2))


def export(flag_values: flags.FlagValues, positional: list[str]) -> int:
    if len(positional) > 1:
        raise UsageError(f"unexpected arguments: {' '.join(positional[1:])}")
    output = pathlib.Path(flag_values.output)
    if output.suffix == ".json":
        raise UsageError(f"--output {output}: the description is written beside the artifact as .json; "
                         "name the artifact e.g. model.jaxexport")
    if output.exists() and not flag_values.overwrite:
        raise UsageError(f"--output {output} exists: choose another name, or pass --overwrite")
    unknown = [platform for platform in flag_values.platforms if platform not in PLATFORMS]
    if unknown or not flag_values.platforms:
        raise UsageError(f"--platforms {','.join(flag_values.platforms)}: choose from {', '.join(PLATFORMS)}")
    canvases = [parse_canvas(text) for text in flag_values.canvas]

    from maskrcnn_jax.inference.predictor import check_prediction_config  # imports JAX and the model
    from maskrcnn_jax.checkpoint import load_checkpoint
    from maskrcnn_jax.export import default_canvases, export_detector, write_artifact

    try:
        check_prediction_config(flag_values.config)
    except ValueError as error:
        raise UsageError(str(error)) from None
    params, _, class_names = load_checkpoint(flag_values.checkpoint)
    canvases = canvases or default_canvases(flag_values.config)
    start = time.perf_counter()
    description, programs, weights = export_detector(flag_values.config, params, class_names, canvases,
                                                     flag_values.platforms, flag_values.input_dtype)
    exported = time.perf_counter() - start
    beside = write_artifact(output, description, programs, weights)
    print(f"exported {len(class_names)} classes, {flag_values.input_dtype} canvases "
          f"{', '.join(f'{h}x{w}' for h, w in canvases)}, for "
          f"{', '.join(flag_values.platforms)} in {exported:.1f} s: {output} "
          f"({output.stat().st_size / 2**20:.1f} MiB), "
          f"{beside}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_script(export, define_flags, argv, doc=__doc__,
                      config_help="model config file (default: the checkpoint's)", config_from_checkpoint=True)


if __name__ == "__main__":
    sys.exit(main())
