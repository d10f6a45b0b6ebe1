"""Compiles what a pod would run, on this machine, and reports memory, compute and traffic per chip.

    python scripts/compile_report.py --config configs/mask_rcnn_r50_fpn_coco.py --topology v5e:4x4 \
        --per_chip_batch 8 [--task train|predict] [--canvas 800x1344] [--config.model.dtype=bfloat16] \
        [--output report.json]

One report per canvas the task compiles for (the trainer compiles one step per training canvas,
config.data.canvases; predict one per evaluation canvas, config.eval.canvases), or for --canvas
alone. --output writes them as a JSON list.

--topology: a TPU topology (v4, v5e, v5p or v6e with its shape, e.g. v5e:2x2; needs libtpu:
pip install -e '.[tpu]', no TPU) or cpu:N (N CPU devices, nothing to install). The train step is the
trainer's own (maskrcnn_jax.training.setup), the state and batch sharded as the trainer shards them;
nothing runs. R50 at the COCO canvas takes minutes per compile on a small machine; --nostages skips
the per-stage breakdown (about as many compiles again). See maskrcnn_jax/training/compile_report.py
and docs/benchmarks.md "TPU compile report".
"""

import json
import pathlib
import sys

from maskrcnn_jax.command_line import UsageError, run_script


def define_flags(flag_values) -> None:
    from absl import flags

    flags.DEFINE_string("topology", None, "cpu:N or a TPU topology such as v5e:4x4", flag_values=flag_values,
                        required=True)
    flags.DEFINE_integer("per_chip_batch", None, "images per chip", lower_bound=1, flag_values=flag_values,
                         required=True)
    flags.DEFINE_enum("task", "train", ["train", "predict"], "the trainer's step or predict", flag_values=flag_values)
    flags.DEFINE_string("canvas", None, "HxW (default: each training canvas of the config, or each evaluation canvas)", flag_values=flag_values)
    flags.DEFINE_bool("stages", True, "also compile each stage alone for the per-stage breakdown",
                      flag_values=flag_values)
    flags.DEFINE_string("output", None, "write the report as JSON here", flag_values=flag_values)


def _canvas(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(part.isdigit() and int(part) > 0 for part in parts):
        raise UsageError(f"--canvas {text!r}: expected HxW, e.g. 1344x1344")
    return int(parts[0]), int(parts[1])


def main(flag_values, positional) -> None:
    if len(positional) > 1:
        raise UsageError(f"unexpected arguments {positional[1:]}")
    from maskrcnn_jax.training import compile_report as report_lib  # JAX starts here, after prepare_devices

    canvas = _canvas(flag_values.canvas)
    try:
        report_lib.prepare_devices(flag_values.topology)
        reports = []
        for one_canvas in [canvas] if canvas else report_lib.report_canvases(flag_values.config, flag_values.task):
            reports.append(report_lib.compile_report(flag_values.config, flag_values.topology,
                                                     flag_values.per_chip_batch, task=flag_values.task,
                                                     canvas=one_canvas, stages=flag_values.stages))
            print(report_lib.format_report(reports[-1]) + "\n", flush=True)  # each as soon as it is compiled
    except ValueError as error:
        if "topology" in str(error):
            raise UsageError(f"--topology: {error}") from None
        raise
    if flag_values.output:
        pathlib.Path(flag_values.output).write_text(json.dumps(reports, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(run_script(main, define_flags, doc=__doc__, config_help="config file with get_config()"))
