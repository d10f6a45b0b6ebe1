"""GFLOP per image on one square canvas against a config's training canvases (e.g. one per
orientation), over the image sizes of COCO-format folders (their annotations.json; no image is read).

    python benchmarks/benchmark_canvases.py --config configs/mask_rcnn_r50_fpn_coco.py --square 1344 \
        --data ../shared/data/coco_val2014_43 --data ../shared/data/coco_train2017_85

XLA's cost analysis of the trainer's step and of predict, compiled at batch 1 on this machine
(`canvas_flops.py`); each image counts its canvas's FLOP, padding included.
"""

import json
import pathlib
import sys

from absl import flags

from canvas_flops import dataset_gflop_per_image, program_gflop
from maskrcnn_jax.command_line import UsageError, run_script
from maskrcnn_jax.training.setup import training_canvases

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "configs" / "mask_rcnn_r50_fpn_coco.py"


def define_flags(flag_values: flags.FlagValues) -> None:
    flags.DEFINE_integer("square", 1344, "side of the square canvas compared against", flag_values=flag_values)
    flags.DEFINE_multi_string("data", [], "COCO-format folder whose annotations.json sizes are averaged over",
                              flag_values=flag_values)


def compare(args: flags.FlagValues, positional: list[str]) -> None:
    if len(positional) > 1:
        raise UsageError(f"unexpected arguments: {' '.join(positional[1:])}")
    config = args.config
    square, canvases = (args.square, args.square), training_canvases(config)
    gflop = program_gflop(config, [square, *canvases])
    for canvas, row in gflop.items():
        print(f"canvas {canvas[0]}x{canvas[1]}: train step {row['train']:.1f} GFLOP per image, "
              f"predict {row['predict']:.1f}")
    for folder in args.data:
        images = json.loads((pathlib.Path(folder) / "annotations.json").read_text())["images"]
        sizes = [(image["height"], image["width"]) for image in images]
        before = dataset_gflop_per_image(sizes, [square], gflop)
        after = dataset_gflop_per_image(sizes, canvases, gflop)
        print(f"{folder}: {len(sizes)} images, per canvas {dict(zip(map(str, canvases), after['images']))}")
        for name in ("train", "predict"):
            print(f"  {name}: square {before[name]:.1f} -> canvases {after[name]:.1f} GFLOP per image "
                  f"({1 - after[name] / before[name]:.1%} less)")


def main(argv: list[str] | None = None) -> int:
    return run_script(compare, define_flags, argv, doc=__doc__, config_help="training config",
                      config_default=str(DEFAULT_CONFIG))


if __name__ == "__main__":
    sys.exit(main())
