"""Training input against training compute: images/s of the grain training pipeline beside the
images/s the training step consumes, for one config, on this machine.

    python benchmarks/benchmark_data.py --config configs/shapes_tiny.py
    python benchmarks/benchmark_data.py --config configs/mask_rcnn_r50_fpn_coco.py --data ../shared/data/coco_train2017_85 \
        --config.data.num_workers=2 --config.train.global_batch_size=8 --step_batch=1

The pipeline is the trainer's (`training.data.training_source` + `training_iterator`: decode,
resize / jitter / crop, flip, round to uint8, pad to the batch's canvas, pad ground truth and crop
masks, batch, with config.data.num_workers processes); the first batch (worker start-up included) is
timed apart, and its bytes per image are what goes from the host to the device. Then, in this
process, the time per image to read a record and to transform it. Then
the step: `benchmarking.train_speed` (the trainer's jitted step, random parameters, a synthetic batch
of --step_batch images on the first training canvas) -- its images/s is what the pipeline must keep up
with. A config with data.source "coco" reads --data (annotations.json + images/); when that is
absent it says so and stops. "shapes" writes its synthetic dataset into --workdir on first use.
"""

import pathlib
import sys
import time

import numpy as np
from absl import flags

import benchmarking
from maskrcnn_jax.command_line import UsageError, run_script
from maskrcnn_jax.data import grouping, transforms
from maskrcnn_jax.training.data import training_iterator, training_source
from maskrcnn_jax.training.setup import training_canvases

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "configs" / "mask_rcnn_r50_fpn_coco.py"


def define_flags(flag_values: flags.FlagValues) -> None:
    flags.DEFINE_string("data", str(ROOT / ".." / "shared" / "data" / "coco_train2017_85"),
                        "COCO-format folder (annotations.json, images/) for a config with data.source coco",
                        flag_values=flag_values)
    flags.DEFINE_string("workdir", "/tmp/benchmark_data", "where data.source shapes writes its images",
                        flag_values=flag_values)
    flags.DEFINE_integer("batches", 20, "timed batches after the first", flag_values=flag_values)
    flags.DEFINE_integer("step_batch", None, "images per timed training step (default: the config's batch)",
                         flag_values=flag_values)
    flags.DEFINE_integer("step_runs", 2, "timed training steps after a warm-up; 0: no step", flag_values=flag_values)


def measure(args: flags.FlagValues, positional: list[str]) -> None:
    if len(positional) > 1:
        raise UsageError(f"unexpected arguments: {' '.join(positional[1:])}")
    config = args.config
    if config.data.source == "coco":
        data = pathlib.Path(args.data)
        if not (data / "annotations.json").is_file():
            print(f"skipped: no COCO data at {data} (annotations.json + images/); pass --data FOLDER")
            return
        config.data.train_annotations, config.data.train_images = str(data / "annotations.json"), str(data / "images")
    source = training_source(config, args.workdir)
    batch_size = config.train.global_batch_size
    canvases = training_canvases(config)
    iterator = training_iterator(config, source)
    start = time.perf_counter()
    first_batch = next(iterator)
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(args.batches):
        next(iterator)
    elapsed = time.perf_counter() - start
    if hasattr(iterator, "close"):
        iterator.close()
    pipeline_images_per_s = args.batches * batch_size / elapsed
    print(f"pipeline: {len(source)} records, workers={config.data.num_workers} canvases={canvases} batch={batch_size} "
          f"lsj={config.data.large_scale_jitter} jitter={tuple(config.data.jitter_range)}: first batch {first:.2f} s, "
          f"{args.batches * batch_size} images in {elapsed:.2f} s = {pipeline_images_per_s:.1f} images/s")
    batch_bytes = sum(value.nbytes for value in first_batch.values())
    print(f"host -> device per image: {batch_bytes / batch_size / 1e6:.2f} MB, of which the image "
          f"({first_batch['image'].dtype}) {first_batch['image'].nbytes / batch_size / 1e6:.2f} MB")
    read_ms, transform_ms = per_image_milliseconds(config, source, num_images=min(20, len(source)))
    print(f"in this process, per image: read {read_ms:.1f} ms, transforms {transform_ms:.1f} ms")
    if args.step_runs:
        step_batch = args.step_batch or batch_size
        step = benchmarking.train_speed(config, canvases[0], step_batch, args.step_runs)
        print(f"train step ({step['device']}, {step['dtype']}): batch {step_batch} in {step['step_s']:.3f} s = "
              f"{step['images_per_s']:.2f} images/s (compile {step['compile_s']:.1f} s); "
              f"pipeline / step = {pipeline_images_per_s / step['images_per_s']:.1f}")


def per_image_milliseconds(config, source, num_images: int) -> tuple[float, float]:
    """Mean ms per image to read a record and to transform it onto its canvas (best of 3 passes, less noise)."""
    data, canvases = config.data, training_canvases(config)
    rng = np.random.default_rng(0)
    read_times, transform_times = [], []
    for _ in range(3):
        start = time.perf_counter()
        records = [source[index] for index in range(num_images)]
        read_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        for record in records:
            canvas = canvases[grouping.canvas_index(*record["image"].shape[:2], canvases)]
            geometry = transforms.training_geometry(
                rng, *record["image"].shape[:2], canvas_size=canvas, min_size=config.input.min_size,
                max_size=config.input.max_size, jitter_range=tuple(data.jitter_range),
                large_scale_jitter=data.large_scale_jitter, flip_probability=data.flip_probability)
            transforms.transform_example(record, geometry, canvas_size=canvas,
                                         max_instances=data.max_instances, mask_size=data.mask_size)
        transform_times.append(time.perf_counter() - start)
    return 1000 * min(read_times) / num_images, 1000 * min(transform_times) / num_images


def main(argv: list[str] | None = None) -> int:
    return run_script(measure, define_flags, argv, doc=__doc__, config_help="training config",
                      config_default=str(DEFAULT_CONFIG))


if __name__ == "__main__":
    sys.exit(main())
