"""Host post-processing of an evaluation: images per second per core, at 100 detections per image.

    .venv/bin/python benchmarks/benchmark_eval_host.py [--images 40] [--detections 100] [--workers N]

Each image is 480x640 (COCO's most common size) with `--detections` kept detections: boxes of
log-uniform width and height from 8 to 400 px (about COCO's small/medium/large mix), 28x28 mask
probabilities shaped like a noisy ellipse. Per image: paste each mask within its box, threshold at
0.5, RLE-encode, build the COCO result dicts (`paste_mask_windows`, `encode_mask_windows`,
`image_detections_to_coco`, the functions evaluation runs). Reported: the CPU seconds of this process per
image (images per CPU-second = per core, unaffected by other jobs on the machine) and the wall time.
--workers N: also through N worker processes (`make_worker_pool`), wall time only. Only those
three functions are used without --workers, so the same command times an older checkout
(PYTHONPATH=that checkout).
"""

import sys
import time

import numpy as np
from absl import flags

from maskrcnn_jax.command_line import UsageError, run_script
from maskrcnn_jax.inference.mask_windows import paste_mask_windows
from maskrcnn_jax.evaluation.coco_results import encode_mask_windows, image_detections_to_coco

HEIGHT, WIDTH, MASK_SIZE = 480, 640, 28


def synthetic_detections(rng, count: int) -> dict:
    """{"boxes" [D, 4] xyxy, "scores" [D], "classes" [D], "masks" [D, 28, 28]} of one 480x640 image."""
    sizes = np.exp(rng.uniform(np.log(8), np.log(400), (count, 2)))
    centres = rng.uniform(0, 1, (count, 2)) * [WIDTH, HEIGHT]
    boxes = np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1)
    boxes = boxes.clip(0, [WIDTH, HEIGHT, WIDTH, HEIGHT]).astype(np.float32)
    y, x = np.mgrid[0:MASK_SIZE, 0:MASK_SIZE] / (MASK_SIZE - 1) - 0.5
    radii = rng.uniform(0.2, 0.5, (count, 2, 1, 1))
    distance = (x[None] / radii[:, 0]) ** 2 + (y[None] / radii[:, 1]) ** 2
    masks = 1 / (1 + np.exp(4 * (distance - 1))) + rng.normal(0, 0.1, (count, MASK_SIZE, MASK_SIZE))
    return {"boxes": boxes, "scores": rng.uniform(0.05, 1, count).astype(np.float32),
            "classes": rng.integers(1, 81, count).astype(np.int32), "masks": masks.clip(0, 1).astype(np.float32)}


def encode_image(image_id: int, detections: dict, label_to_category_id: dict) -> list:
    windows = paste_mask_windows(detections["masks"], detections["boxes"], HEIGHT, WIDTH)
    rles = encode_mask_windows(windows, HEIGHT, WIDTH)
    return image_detections_to_coco(image_id, detections["boxes"], detections["scores"], detections["classes"],
                                    label_to_category_id, rles)


def define_flags(flag_values: flags.FlagValues) -> None:
    flags.DEFINE_integer("images", 40, "synthetic images", flag_values=flag_values)
    flags.DEFINE_integer("detections", 100, "detections per image", flag_values=flag_values)
    flags.DEFINE_integer("repeats", 3, "passes over the images; the best is reported", flag_values=flag_values)
    flags.DEFINE_integer("workers", 0, "also time this many worker processes (0: none)", flag_values=flag_values)


def measure(args: flags.FlagValues, positional: list[str]) -> None:
    if len(positional) > 1:
        raise UsageError(f"unexpected arguments: {' '.join(positional[1:])}")
    rng = np.random.default_rng(0)
    images = [synthetic_detections(rng, args.detections) for _ in range(args.images)]
    labels = {label: label for label in range(1, 91)}
    encode_image(0, images[0], labels)  # warm-up
    cpu, wall = [], []
    for _ in range(args.repeats):
        cpu_start, wall_start = time.process_time(), time.perf_counter()
        for image_id, detections in enumerate(images):
            encode_image(image_id, detections, labels)
        cpu.append(time.process_time() - cpu_start)
        wall.append(time.perf_counter() - wall_start)
    print(f"{args.images} images x {args.detections} detections, {HEIGHT}x{WIDTH}: "
          f"{1000 * min(cpu) / args.images:.2f} ms CPU per image = {args.images / min(cpu):.1f} images/s per core; "
          f"wall {args.images / min(wall):.1f} images/s in this process")
    if args.workers:
        from maskrcnn_jax.evaluation.coco_results import image_results
        from maskrcnn_jax.evaluation.host_workers import make_worker_pool

        pool = make_worker_pool(args.workers)
        list(pool.map(image_results, [0], [HEIGHT], [WIDTH], images[:1], [labels]))  # the workers are up
        start = time.perf_counter()
        outcomes = list(pool.map(image_results, range(len(images)), [HEIGHT] * len(images), [WIDTH] * len(images),
                                 images, [labels] * len(images)))
        seconds = time.perf_counter() - start
        pool.shutdown()
        worker_seconds = sum(paste + rle for _, paste, rle in outcomes)
        print(f"  {args.workers} worker processes: wall {args.images / seconds:.1f} images/s "
              f"({1000 * worker_seconds / args.images:.2f} ms of worker time per image)")


def main(argv: list[str] | None = None) -> int:
    return run_script(measure, define_flags, argv, doc=__doc__)


if __name__ == "__main__":
    sys.exit(main())
