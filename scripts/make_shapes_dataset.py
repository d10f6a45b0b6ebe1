"""Writes the synthetic shapes dataset (COCO json + PNG): squares, circles and triangles with exact masks.

  python scripts/make_shapes_dataset.py --output /tmp/shapes --num_images 200 --seed 0 --image_size 128,256
"""

import sys
import time

from absl import flags

from maskrcnn_jax.command_line import UsageError, run_script


def define_flags(flag_values: flags.FlagValues) -> None:
    flags.DEFINE_string("output", None, "folder for annotations.json and images/", required=True,
                        flag_values=flag_values)
    flags.DEFINE_integer("num_images", None, "how many images (at least 1)", required=True, flag_values=flag_values)
    flags.DEFINE_integer("seed", 0, "random seed", flag_values=flag_values)
    flags.DEFINE_list("image_size", ["128", "256"], "one side for square images, or MIN,MAX for sides drawn from "
                      "[MIN, MAX]", flag_values=flag_values)
    flags.DEFINE_integer("max_shapes", 6, "shapes per image are drawn from 1..MAX", flag_values=flag_values)


def make_dataset(flag_values: flags.FlagValues, positional: list[str]) -> int:
    if len(positional) > 1:
        raise UsageError(f"unexpected arguments: {' '.join(positional[1:])}")
    if flag_values.num_images < 1:
        raise UsageError(f"--num_images {flag_values.num_images}: give at least 1")
    if flag_values.max_shapes < 1:
        raise UsageError(f"--max_shapes {flag_values.max_shapes}: give at least 1")
    if flag_values.seed < 0:
        raise UsageError(f"--seed {flag_values.seed}: give a number >= 0")
    sides = flag_values.image_size
    if len(sides) not in (1, 2) or not all(side.isdigit() and int(side) >= 8 for side in sides):
        raise UsageError("--image_size takes one side or MIN,MAX, each at least 8")
    min_size, max_size = int(sides[0]), int(sides[-1])
    if min_size > max_size:
        raise UsageError("--image_size MIN,MAX needs MIN <= MAX")
    from maskrcnn_jax.data import shapes

    start = time.perf_counter()
    annotation_file = shapes.write_shapes_dataset(flag_values.output, flag_values.num_images, seed=flag_values.seed,
                                                  min_size=min_size, max_size=max_size,
                                                  max_shapes=flag_values.max_shapes)
    print(f"wrote {flag_values.num_images} images and {annotation_file} in {time.perf_counter() - start:.1f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_script(make_dataset, define_flags, argv, doc=__doc__)


if __name__ == "__main__":
    sys.exit(main())
