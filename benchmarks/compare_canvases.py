"""Detections on the config's orientation canvases against one large canvas, image by image.

    python benchmarks/compare_canvases.py --checkpoint DIR --data ../shared/data/coco_val2014_43

Each photo is predicted on config.input.canvas_size (the large canvas, e.g. 1344x1344) and on its
canvas among the training canvases (`config.data.canvases`, e.g. 800x1344 / 1344x800), batch 1; a
large-canvas detection is matched when the other run has one of its class with box IoU >= 0.99
(`canvas_parity.py`). Prints the matched share and where the unmatched ones are.
"""

import sys

import numpy as np
from absl import flags

from canvas_parity import detections_by_image, matched
from maskrcnn_jax.checkpoint import load_checkpoint
from maskrcnn_jax.command_line import UsageError, run_script
from maskrcnn_jax.data import CocoSource
from maskrcnn_jax.training.setup import training_canvases


def define_flags(flag_values: flags.FlagValues) -> None:
    flags.DEFINE_string("checkpoint", None, "converted or trained checkpoint directory", required=True,
                        flag_values=flag_values)
    flags.DEFINE_string("data", None, "COCO-format folder (annotations.json, images/)", required=True,
                        flag_values=flag_values)
    flags.DEFINE_float("border", 32.0, "resized pixels from the photo's bottom / right edge that count as the border",
                       flag_values=flag_values)


def compare(args: flags.FlagValues, positional: list[str]) -> None:
    if len(positional) > 1:
        raise UsageError(f"unexpected arguments: {' '.join(positional[1:])}")
    params, config, _ = load_checkpoint(args.checkpoint)
    source = CocoSource(f"{args.data}/annotations.json", f"{args.data}/images")
    large = [tuple(config.input.canvas_size)]
    canvases = training_canvases(config)
    reference = detections_by_image(config, params, source, large)
    other = detections_by_image(config, params, source, canvases)
    sizes = {entry.image_id: (entry.height, entry.width) for entry in source.entries}
    total, unmatched = 0, []
    for image_id, found in reference.items():
        hits = matched(found, other[image_id])
        total += len(hits)
        height, width = sizes[image_id]
        scale = min(config.input.min_size / min(height, width), config.input.max_size / max(height, width))
        for box, score in zip(found["boxes"][~hits], found["scores"][~hits]):
            # Distance of the box to the photo's bottom / right edge, in resized pixels.
            gap = min(height - box[3], width - box[2]) * scale
            side = np.sqrt(max((box[2] - box[0]) * (box[3] - box[1]), 0.0)) * scale
            unmatched.append((float(score), float(gap), float(side)))
    print(f"{len(reference)} images, canvases {large} vs {canvases}: {total - len(unmatched)} of {total} detections "
          f"matched ({(total - len(unmatched)) / max(total, 1):.2%}) at IoU >= 0.99 and the same class")
    if unmatched:
        scores, gaps, sides = map(np.array, zip(*unmatched))
        border = gaps < args.border
        large = ~border & (sides >= 256)
        low = ~border & ~large & (scores < 0.1)
        print(f"unmatched {len(unmatched)}: within {args.border:g} resized px of the bottom/right edge "
              f"{border.sum()}; else box side >= 256 px (P5/P6 sizes) {large.sum()}; else score < 0.1 {low.sum()}; "
              f"else {len(unmatched) - border.sum() - large.sum() - low.sum()}; median score {np.median(scores):.3f}")


def main(argv: list[str] | None = None) -> int:
    return run_script(compare, define_flags, argv, doc=__doc__)


if __name__ == "__main__":
    sys.exit(main())
