"""Writes the synthetic shapes dataset (COCO json + PNG): squares, circles and triangles with exact masks.

  python scripts/make_shapes_dataset.py --output /tmp/shapes --num-images 200 --seed 0 --image-size 128 256
"""

import argparse
import time

from maskrcnn_jax.data import shapes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, help="folder for annotations.json and images/")
    parser.add_argument("--num-images", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, nargs="+", default=[128, 256], metavar="SIDE",
                        help="one side for square images, or MIN MAX for sides drawn from [MIN, MAX]")
    parser.add_argument("--max-shapes", type=int, default=6, help="shapes per image are drawn from 1..MAX")
    args = parser.parse_args()
    if len(args.image_size) not in (1, 2) or min(args.image_size) < 8:
        parser.error("--image-size takes one side or MIN MAX, each at least 8")
    min_size, max_size = args.image_size[0], args.image_size[-1]
    if min_size > max_size:
        parser.error("--image-size MIN MAX needs MIN <= MAX")
    start = time.perf_counter()
    annotation_file = shapes.write_shapes_dataset(args.output, args.num_images, seed=args.seed, min_size=min_size,
                                                  max_size=max_size, max_shapes=args.max_shapes)
    print(f"wrote {args.num_images} images and {annotation_file} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
