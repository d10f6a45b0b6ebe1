"""How far ops.mask_targets_from_crops is from torchvision's mask targets on real COCO masks.

    .venv/bin/python benchmarks/measure_mask_targets.py [--data ../shared/data/coco_train2017_85] \
        [--rois_per_gt 8] [--seed 0] [--native_scale] [--output F.json]

Each image is resized as torchvision trains (short side 800, long side at most 1333; with
--native_scale not at all). Ours: the pipeline's 112x112 box crops (data.transforms.
crop_masks_to_boxes of the original-resolution masks) resampled to 28x28 per RoI. torchvision's:
the GT masks resized to the training scale as GeneralizedRCNNTransform does (legacy nearest), then
roi_align(mask, roi, 28, 1.0, sampling_ratio=-1, aligned=False). RoIs: each GT box itself
(torchvision appends GT boxes to the proposals) and boxes jittered around it with IoU >= 0.5,
clipped to the image, as positive proposals are.
Prints the mean, 99th percentile and max absolute difference per pixel and the mean IoU of the
targets thresholded at 0.5, overall and per GT size (COCO small / medium / large by box area at the
training scale), for ours with aligned=True (the default) and aligned=False, and for scale:
torchvision's own target with a fixed sampling_ratio=2 instead of the adaptive one (what our
roi_align gives from full-image masks).
"""

import json
import pathlib
import sys

import jax
import numpy as np
import torch
import torchvision
from absl import flags

from maskrcnn_jax.command_line import UsageError, run_script
from maskrcnn_jax.data import CocoSource
from maskrcnn_jax.data import transforms
from maskrcnn_jax.ops import mask_targets_from_crops

DEFAULT_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "coco_train2017_85"
MIN_SIZE, MAX_SIZE = 800, 1333
CROP_SIZE, OUTPUT_SIZE = 112, 28
SIZE_BUCKETS = {"small": (0, 32**2), "medium": (32**2, 96**2), "large": (96**2, np.inf)}

jitted_mask_targets = jax.jit(mask_targets_from_crops, static_argnums=3, static_argnames="aligned")
CANDIDATES = ("ours, aligned=True", "ours, aligned=False", "torchvision, sampling_ratio=2")


def jittered_rois(rng, box, count, height, width, min_iou=0.5):
    """The box itself and count - 1 boxes around it with IoU >= min_iou, clipped to the image: float32 [count, 4]."""
    centre = (box[:2] + box[2:]) / 2
    size = box[2:] - box[:2]
    rois = [box.astype(np.float32)]
    while len(rois) < count:
        new_centre = centre + rng.normal(scale=0.12, size=2) * size
        new_size = size * np.exp(rng.normal(scale=0.2, size=2))
        roi = np.clip(np.concatenate([new_centre - new_size / 2, new_centre + new_size / 2]), 0, [width, height] * 2)
        if float(torchvision.ops.box_iou(torch.from_numpy(box[None]), torch.from_numpy(roi[None]))) >= min_iou:
            rois.append(roi.astype(np.float32))
    return np.stack(rois)


def torchvision_full_masks(masks, scale, height, width):
    """GT masks uint8 [M, h, w] resized like GeneralizedRCNNTransform: float32 [M, height, width] (nearest)."""
    resized = torch.nn.functional.interpolate(
        torch.from_numpy(masks)[:, None].float(), scale_factor=scale, recompute_scale_factor=True)[:, 0]
    assert resized.shape[1:] == (height, width), (resized.shape, height, width)
    return resized


def image_targets(record, rng, rois_per_gt, native_scale=False):
    """Torchvision's targets and each candidate's for every kept GT of one record and its jittered RoIs.

    native_scale: keep the image at its own size (torchvision's nearest mask resize is then the identity).
    Returns (torchvision's float32 [R, 28, 28], {candidate: float32 [R, 28, 28]}, GT box area [R]).
    """
    height, width = record["image"].shape[:2]
    scale = 1.0 if native_scale else transforms.resize_scale(height, width, MIN_SIZE, MAX_SIZE)
    resized_height, resized_width = transforms.scaled_shape(height, width, scale)
    geometry = transforms.Geometry(height, width, resized_height, resized_width, 0, 0, resized_height, resized_width,
                                   flip=False)
    boxes = transforms.transform_boxes(record["boxes"], geometry)
    kept = np.flatnonzero(np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) >= 1.0)  # as the pipeline
    boxes, masks = boxes[kept], record["masks"][kept]
    crops = transforms.crop_masks_to_boxes(masks, transforms.unflipped_boxes_in_original(boxes, geometry), CROP_SIZE)
    rois = np.concatenate([jittered_rois(rng, box, rois_per_gt, geometry.height, geometry.width) for box in boxes])
    gt_index = np.repeat(np.arange(len(boxes)), rois_per_gt)

    full = torchvision_full_masks(masks, scale, geometry.height, geometry.width)[:, None]
    indexed_rois = torch.from_numpy(np.concatenate([gt_index[:, None].astype(np.float32), rois], axis=1))
    size = (OUTPUT_SIZE, OUTPUT_SIZE)
    reference = torchvision.ops.roi_align(full, indexed_rois, size, 1.0, -1, False)[:, 0].numpy()
    candidates = {
        name: np.asarray(jitted_mask_targets(crops[gt_index], boxes[gt_index], rois, OUTPUT_SIZE, aligned=aligned))
        for name, aligned in zip(CANDIDATES[:2], (True, False))
    }
    candidates[CANDIDATES[2]] = torchvision.ops.roi_align(full, indexed_rois, size, 1.0, 2, False)[:, 0].numpy()
    areas = (boxes[gt_index, 2] - boxes[gt_index, 0]) * (boxes[gt_index, 3] - boxes[gt_index, 1])
    return reference, candidates, areas


def thresholded_iou(ours, reference):
    """IoU per RoI of the two targets thresholded at 0.5: [R] (1 where both are empty)."""
    ours_binary, reference_binary = ours >= 0.5, reference >= 0.5
    intersection = (ours_binary & reference_binary).sum((1, 2))
    union = (ours_binary | reference_binary).sum((1, 2))
    return np.where(union > 0, intersection / np.maximum(union, 1), 1.0)


def summarize(ours, reference):
    difference = np.abs(ours - reference)
    return {"rois": len(ours), "mean_abs_difference": float(difference.mean()),
            "p99_abs_difference": float(np.percentile(difference, 99)),
            "max_abs_difference": float(difference.max()),
            "mean_iou_at_0.5": float(thresholded_iou(ours, reference).mean())}


def measure(data_dir, rois_per_gt, seed, native_scale=False):
    """{candidate: {size bucket or "all": summary}} over every image with GT of the COCO folder `data_dir`."""
    source = CocoSource(data_dir / "annotations.json", data_dir / "images")
    rng = np.random.default_rng(seed)
    records = (source[index] for index in range(len(source)))
    results = [image_targets(record, rng, rois_per_gt, native_scale) for record in records if len(record["boxes"])]
    reference = np.concatenate([result[0] for result in results])
    areas = np.concatenate([result[2] for result in results])
    buckets = {"all": np.ones(len(areas), bool)}
    buckets.update({name: (areas >= low) & (areas < high) for name, (low, high) in SIZE_BUCKETS.items()})
    summaries = {}
    for name in CANDIDATES:
        targets = np.concatenate([result[1][name] for result in results])
        summaries[name] = {bucket: summarize(targets[inside], reference[inside])
                           for bucket, inside in buckets.items() if inside.any()}
    return summaries


def define_flags(flag_values: flags.FlagValues) -> None:
    flags.DEFINE_string("data", str(DEFAULT_DATA), "COCO-format folder (annotations.json, images/)",
                        flag_values=flag_values)
    flags.DEFINE_integer("rois_per_gt", 8, "RoIs per GT box: the box itself and jittered ones with IoU >= 0.5",
                         flag_values=flag_values)
    flags.DEFINE_integer("seed", 0, "random seed of the jittered RoIs", flag_values=flag_values)
    flags.DEFINE_bool("native_scale", False, "no resize: compare at each image's own size (torchvision's mask resize "
                      "does nothing)", flag_values=flag_values)
    flags.DEFINE_string("output", None, "write the figures to this JSON file", flag_values=flag_values)


def compare(args: flags.FlagValues, positional: list[str]) -> None:
    if len(positional) > 1:
        raise UsageError(f"unexpected arguments: {' '.join(positional[1:])}")
    summaries = measure(pathlib.Path(args.data), args.rois_per_gt, args.seed, args.native_scale)
    for name, buckets in summaries.items():
        print(f"\n{name}, against torchvision's roi_align(sampling_ratio=-1, aligned=False)")
        print(f"{'GT size':8} {'RoIs':>6} {'mean |diff|':>12} {'p99 |diff|':>11} {'max |diff|':>11} {'IoU@0.5':>8}")
        for bucket, summary in buckets.items():
            print(f"{bucket:8} {summary['rois']:6d} {summary['mean_abs_difference']:12.4f} "
                  f"{summary['p99_abs_difference']:11.4f} {summary['max_abs_difference']:11.4f} "
                  f"{summary['mean_iou_at_0.5']:8.4f}")
    if args.output:
        pathlib.Path(args.output).write_text(json.dumps(summaries, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    return run_script(compare, define_flags, argv, doc=__doc__)


if __name__ == "__main__":
    sys.exit(main())
