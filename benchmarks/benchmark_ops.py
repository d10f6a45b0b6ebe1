"""Time the jitted JAX ops against torchvision on the same inputs and thread count.

    .venv/bin/python benchmarks/benchmark_ops.py [--repeats 7] [--threads 2] [--output ops.json]

Cases: multi-level RoIAlign (batch 2 via vmap, 512 boxes per image, 256 channels, the P2-P5 maps
of an 800x1216 image, 7x7, sampling 2), forward and with its feature gradient, NMS (4000 overlapping candidates, IoU 0.7) and mask
pasting (100 masks of 28x28 into an 800x1216 image). JAX and torchvision runs are interleaved
after a warm-up so that load from other processes hits both alike; median and min are reported.
"""

import functools
import json
import os
import sys
import time
from collections import OrderedDict

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torchvision
from absl import flags
from torchvision.models.detection.roi_heads import paste_masks_in_image as torchvision_paste

from maskrcnn_jax.command_line import UsageError, run_script
from maskrcnn_jax.ops import multilevel_roi_align, nms, paste_masks_in_image, roi_align, roi_levels

IMAGE_HEIGHT, IMAGE_WIDTH = 800, 1216
LEVEL_SHAPES = ((200, 304), (100, 152), (50, 76), (25, 38))
SPATIAL_SCALES = (1 / 4, 1 / 8, 1 / 16, 1 / 32)


def proposal_boxes(rng, count, objects):
    """Boxes scattered around objects of many sizes, clipped to the image, like RPN proposals."""
    centres = rng.uniform([0, 0], [IMAGE_WIDTH, IMAGE_HEIGHT], size=(objects, 2))
    sizes = np.exp(rng.uniform(np.log(16), np.log(500), size=(objects, 2)))
    which = rng.integers(0, objects, size=count)
    centre = centres[which] + rng.normal(scale=0.1, size=(count, 2)) * sizes[which]
    size = sizes[which] * np.exp(rng.normal(scale=0.15, size=(count, 2)))
    boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
    return np.clip(boxes, 0, [IMAGE_WIDTH, IMAGE_HEIGHT, IMAGE_WIDTH, IMAGE_HEIGHT]).astype(np.float32)


def pool_every_level_then_select(features, boxes, output_size):
    """The alternative layout: RoIAlign of every box on every level, then pick each box's level."""
    level = roi_levels(boxes, num_levels=len(features), min_level=2)
    pooled = jnp.stack(
        [roi_align(feature, boxes, output_size, scale, 2, False) for feature, scale in zip(features, SPATIAL_SCALES)]
    )
    return jnp.take_along_axis(pooled, level[None, :, None, None, None], axis=0)[0]


def roi_align_cases(rng, boxes_per_step):
    batch, num_boxes, channels = 2, 512, 256
    features = [rng.normal(size=(batch, h, w, channels)).astype(np.float32) for h, w in LEVEL_SHAPES]
    boxes = np.stack([proposal_boxes(rng, num_boxes, objects=200) for _ in range(batch)])
    jax_features = [jnp.asarray(level) for level in features]
    jax_boxes = jnp.asarray(boxes)
    gather_one_level = jax.jit(
        jax.vmap(lambda f, b: multilevel_roi_align(f, b, 7, boxes_per_step=boxes_per_step))
    )
    every_level = jax.jit(jax.vmap(lambda f, b: pool_every_level_then_select(f, b, 7)))
    pooler = torchvision.ops.MultiScaleRoIAlign(["p2", "p3", "p4", "p5"], 7, sampling_ratio=2)
    torch_features = OrderedDict(
        (name, torch.from_numpy(level).permute(0, 3, 1, 2).contiguous())
        for name, level in zip(["p2", "p3", "p4", "p5"], features)
    )
    torch_boxes = [torch.from_numpy(b) for b in boxes]
    image_sizes = [(IMAGE_HEIGHT, IMAGE_WIDTH)] * batch
    reference = pooler(torch_features, torch_boxes, image_sizes).permute(0, 2, 3, 1).numpy()
    error = float(np.abs(np.asarray(gather_one_level(jax_features, jax_boxes)).reshape(reference.shape) - reference).max())
    return "multilevel RoIAlign, B=2 x 512 boxes, C=256, 7x7", error, {
        f"jax (one gather per box level, {boxes_per_step} boxes/step)": lambda: gather_one_level(jax_features, jax_boxes),
        "jax (every level for every box, then select)": lambda: every_level(jax_features, jax_boxes),
        "torchvision MultiScaleRoIAlign": lambda: pooler(torch_features, torch_boxes, image_sizes),
    }


def roi_align_gradient_cases(rng, boxes_per_step):
    batch, num_boxes, channels = 2, 512, 256
    features = [rng.normal(size=(batch, h, w, channels)).astype(np.float32) for h, w in LEVEL_SHAPES]
    boxes = np.stack([proposal_boxes(rng, num_boxes, objects=200) for _ in range(batch)])
    jax_features = [jnp.asarray(level) for level in features]

    def loss(features, boxes):
        pooled = jax.vmap(lambda f, b: multilevel_roi_align(f, b, 7, boxes_per_step=boxes_per_step))(features, boxes)
        return jnp.sum(pooled**2)

    feature_gradient = jax.jit(jax.grad(loss))
    pooler = torchvision.ops.MultiScaleRoIAlign(["p2", "p3", "p4", "p5"], 7, sampling_ratio=2)
    torch_features = OrderedDict(
        (name, torch.from_numpy(level).permute(0, 3, 1, 2).contiguous().requires_grad_(True))
        for name, level in zip(["p2", "p3", "p4", "p5"], features)
    )
    torch_boxes = [torch.from_numpy(b) for b in boxes]
    image_sizes = [(IMAGE_HEIGHT, IMAGE_WIDTH)] * batch

    def torch_gradient():
        with torch.enable_grad():
            pooled = pooler(torch_features, torch_boxes, image_sizes)
            return torch.autograd.grad((pooled**2).sum(), list(torch_features.values()))

    reference = torch_gradient()[0].permute(0, 2, 3, 1).numpy()
    error = float(np.abs(np.asarray(feature_gradient(jax_features, boxes)[0]) - reference).max())
    return "multilevel RoIAlign forward + gradient w.r.t. features (same sizes)", error, {
        f"jax grad ({boxes_per_step} boxes/step)": lambda: feature_gradient(jax_features, boxes),
        "torchvision MultiScaleRoIAlign + autograd": torch_gradient,
    }


def nms_cases(rng):
    count = 4000
    boxes = proposal_boxes(rng, count, objects=300)
    scores = rng.permutation(count).astype(np.float32) / count
    valid = np.ones(count, bool)
    keep_1000 = jax.jit(functools.partial(nms, iou_threshold=0.7, max_output=1000))
    keep_all = jax.jit(functools.partial(nms, iou_threshold=0.7, max_output=count))
    torch_boxes, torch_scores = torch.from_numpy(boxes), torch.from_numpy(scores)
    reference = torchvision.ops.nms(torch_boxes, torch_scores, 0.7).numpy()
    indices, kept = keep_all(boxes, scores, valid)
    same = np.array_equal(np.asarray(indices)[np.asarray(kept)], reference)
    title = f"NMS, 4000 candidates, IoU 0.7 ({len(reference)} kept)"
    return title, 0.0 if same else float("inf"), {
        "jax nms, max_output=1000": lambda: keep_1000(boxes, scores, valid),
        "jax nms, max_output=4000 (all kept)": lambda: keep_all(boxes, scores, valid),
        "torchvision.ops.nms": lambda: torchvision.ops.nms(torch_boxes, torch_scores, 0.7),
    }


def paste_cases(rng):
    count = 100
    boxes = proposal_boxes(rng, count, objects=100)
    masks = rng.uniform(size=(count, 28, 28)).astype(np.float32)
    paste = jax.jit(functools.partial(paste_masks_in_image, height=IMAGE_HEIGHT, width=IMAGE_WIDTH))
    torch_masks, torch_boxes = torch.from_numpy(masks)[:, None], torch.from_numpy(boxes)
    reference = torchvision_paste(torch_masks, torch_boxes, (IMAGE_HEIGHT, IMAGE_WIDTH))[:, 0].numpy()
    error = float(np.abs(np.asarray(paste(masks, boxes)) - reference).max())
    return "paste 100 masks 28x28 into 800x1216", error, {
        "jax paste_masks_in_image": lambda: paste(masks, boxes),
        "torchvision paste_masks_in_image": lambda: torchvision_paste(torch_masks, torch_boxes, (IMAGE_HEIGHT, IMAGE_WIDTH)),
    }


def time_interleaved(functions, repeats):
    """Milliseconds per call for each function, runs interleaved round by round after one warm-up."""
    for run in functions.values():
        jax.block_until_ready(run())
    times = {name: [] for name in functions}
    with torch.no_grad():
        for _ in range(repeats):
            for name, run in functions.items():
                start = time.perf_counter()
                jax.block_until_ready(run())
                times[name].append(1e3 * (time.perf_counter() - start))
    return times


def define_flags(flag_values: flags.FlagValues) -> None:
    flags.DEFINE_integer("repeats", 7, "timed runs of each implementation, interleaved", flag_values=flag_values)
    flags.DEFINE_integer("threads", os.cpu_count(), "torch threads; XLA:CPU uses all cores", flag_values=flag_values)
    flags.DEFINE_integer("boxes_per_step", 2, "multilevel_roi_align boxes_per_step", flag_values=flag_values)
    flags.DEFINE_string("output", None, "write the figures to this JSON file", flag_values=flag_values)


def compare(args: flags.FlagValues, positional: list[str]) -> None:
    if len(positional) > 1:
        raise UsageError(f"unexpected arguments: {' '.join(positional[1:])}")
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    results = []
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, torch {torch.__version__} with {args.threads} threads")
    cases = (
        roi_align_cases(rng, args.boxes_per_step),
        roi_align_gradient_cases(rng, args.boxes_per_step),
        nms_cases(rng),
        paste_cases(rng),
    )
    for title, error, functions in cases:
        times = time_interleaved(functions, args.repeats)
        reference_name = list(functions)[-1]
        reference_median = float(np.median(times[reference_name]))
        print(f"\n{title}  (max |jax - torchvision| = {error:.2g})")
        print(f"  {'implementation':58s} {'median ms':>10s} {'min ms':>8s} {'/ torchvision':>14s}")
        for name, samples in times.items():
            median = float(np.median(samples))
            print(f"  {name:58s} {median:10.1f} {min(samples):8.1f} {median / reference_median:14.2f}")
            results.append(
                {"case": title, "implementation": name, "median_ms": median, "min_ms": min(samples),
                 "ratio_to_torchvision": median / reference_median, "max_abs_error": error}
            )
    if args.output:
        with open(args.output, "w") as file:
            json.dump({"threads": args.threads, "repeats": args.repeats, "results": results}, file, indent=2)


def main(argv: list[str] | None = None) -> int:
    return run_script(compare, define_flags, argv, doc=__doc__)


if __name__ == "__main__":
    sys.exit(main())
