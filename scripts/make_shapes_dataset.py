"""Writes the synthetic shapes dataset (COCO json + PNG): squares, circles and triangles with exact masks.

  python scripts/make_shapes_dataset.py --output /tmp/shapes --num-images 200 --seed 0 --image-size 128 256
"""

import sys
import time

from maskrcnn_jax.command_line import ArgumentParser, UsageError, run_argparse


def make_parser() -> ArgumentParser:
    parser = ArgumentParser(__doc__)
    parser.add_argument("--output", required=True, help="folder for annotations.json and images/")
    parser.add_argument("--num-images", type=int, required=True, help="how many images (at least 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, nargs="+", default=[128, 256], metavar="SIDE",
                        help="one side for square images, or MIN MAX for sides drawn from [MIN, MAX]")
    parser.add_argument("--max-shapes", type=int, default=6, help="shapes per image are drawn from 1..MAX")
    return parser


def make_dataset(args) -> int:
    if args.num_images < 1:
        raise UsageError(f"--num-images {args.num_images}: give at least 1")
    if args.max_shapes < 1:
        raise UsageError(f"--max-shapes {args.max_shapes}: give at least 1")
    if args.seed < 0:
        raise UsageError(f"--seed {args.seed}: give a number >= 0")
    if len(args.image_size) not in (1, 2) or min(args.image_size) < 8:
        raise UsageError("--image-size takes one side or MIN MAX, each at least 8")
    min_size, max_size = args.image_size[0], args.image_size[-1]
    if min_size > max_size:
        raise UsageError("--image-size MIN MAX needs MIN <= MAX")
    from maskrcnn_jax.data import shapes

    start = time.perf_counter()
    annotation_file = shapes.write_shapes_dataset(args.output, args.num_images, seed=args.seed, min_size=min_size,
                                                  max_size=max_size, max_shapes=args.max_shapes)
    print(f"wrote {args.num_images} images and {annotation_file} in {time.perf_counter() - start:.1f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_argparse(make_dataset, make_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
