"""Loader throughput: images/s of the grain training pipeline with its full transforms.

    python scripts/benchmark_data.py --data ../shared/data/coco_train2017_85 [--workers 2] \
        [--canvas 1024] [--batch 8] [--batches 20] [--large_scale_jitter] [--jitter 0.1,2.0]

Decode, resize/jitter/crop, flip, normalise, pad to the canvas, pad ground truth and crop masks
to 112x112, batch; the first batch (worker start-up included) is timed separately. Then, in this
process, the time per image to read a record (decode image and masks) and to transform it.
"""

import time

import numpy as np
from absl import app, flags

from maskrcnn_jax.data import transforms
from maskrcnn_jax.data.coco import CocoSource
from maskrcnn_jax.data.pipeline import training_dataset

DATA = flags.DEFINE_string("data", "../shared/data/coco_train2017_85",
                            "COCO-format folder with annotations.json and images/")
WORKERS = flags.DEFINE_integer("workers", 2, "grain worker processes (0: in this process)")
CANVAS = flags.DEFINE_integer("canvas", 1024, "square canvas side")
MIN_SIZE = flags.DEFINE_integer("min_size", 800, "torchvision min_size (short side)")
MAX_SIZE = flags.DEFINE_integer("max_size", 1024, "torchvision max_size (long side)")
BATCH = flags.DEFINE_integer("batch", 8, "images per batch")
BATCHES = flags.DEFINE_integer("batches", 20, "timed batches after the first")
LARGE_SCALE_JITTER = flags.DEFINE_bool("large_scale_jitter", False, "scale relative to the canvas")
JITTER = flags.DEFINE_list("jitter", ["1.0", "1.0"], "scale jitter range lo,hi")
MAX_INSTANCES = flags.DEFINE_integer("max_instances", 100, "ground-truth slots per image")


def main(argv):
    del argv
    source = CocoSource(f"{DATA.value}/annotations.json", f"{DATA.value}/images")
    dataset = training_dataset(
        source, global_batch_size=BATCH.value, seed=0, canvas_size=(CANVAS.value, CANVAS.value),
        min_size=MIN_SIZE.value, max_size=MAX_SIZE.value, max_instances=MAX_INSTANCES.value, mask_size=112,
        flip_probability=0.5, jitter_range=tuple(float(v) for v in JITTER.value),
        large_scale_jitter=LARGE_SCALE_JITTER.value, num_workers=WORKERS.value)
    iterator = iter(dataset)
    start = time.perf_counter()
    next(iterator)
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(BATCHES.value):
        next(iterator)
    elapsed = time.perf_counter() - start
    images = BATCHES.value * BATCH.value
    print(f"workers={WORKERS.value} canvas={CANVAS.value} batch={BATCH.value} "
          f"lsj={LARGE_SCALE_JITTER.value} jitter={JITTER.value}: first batch {first:.2f} s, "
          f"{images} images in {elapsed:.2f} s = {images / elapsed:.1f} images/s")
    if hasattr(iterator, "close"):
        iterator.close()
    read_ms, transform_ms = per_image_milliseconds(source, num_images=20)
    print(f"in this process, per image: read {read_ms:.1f} ms, transforms {transform_ms:.1f} ms")


def per_image_milliseconds(source, num_images: int) -> tuple[float, float]:
    """Mean ms per image to read a record and to transform it (best of 3 passes, less noise)."""
    canvas = (CANVAS.value, CANVAS.value)
    rng = np.random.default_rng(0)
    read_times, transform_times = [], []
    for _ in range(3):
        start = time.perf_counter()
        records = [source[index] for index in range(num_images)]
        read_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        for record in records:
            geometry = transforms.training_geometry(
                rng, *record["image"].shape[:2], canvas_size=canvas, min_size=MIN_SIZE.value,
                max_size=MAX_SIZE.value, jitter_range=tuple(float(v) for v in JITTER.value),
                large_scale_jitter=LARGE_SCALE_JITTER.value, flip_probability=0.5)
            transforms.transform_example(record, geometry, canvas_size=canvas,
                                         max_instances=MAX_INSTANCES.value, mask_size=112)
        transform_times.append(time.perf_counter() - start)
    return 1000 * min(read_times) / num_images, 1000 * min(transform_times) / num_images


if __name__ == "__main__":
    app.run(main)
