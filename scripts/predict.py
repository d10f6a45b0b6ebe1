"""Detect objects in photos: one annotated PNG per image and one COCO-style results JSON for all of them.

    python scripts/predict.py --checkpoint DIR --output OUT [--score_threshold=0.5] IMAGE...
        [--config FILE] [--config.key=value ...]

The checkpoint brings its config and class names (`--config` replaces the config, `--config.key=value`
changes a field of either). Each image is preprocessed as torchvision does (resize to min/max size,
pad to a multiple of 32), so the model compiles once per padded size. Writes OUT/<image stem>.png and
OUT/detections.json, a list of {"image": file name, "category_id": label, "class_name", "bbox":
[x, y, w, h], "score", "segmentation": RLE at the original size}.
"""

import json
import pathlib
import sys

from absl import app, flags

from maskrcnn_jax.api import DEFAULT_SCORE_THRESHOLD, Detector
from maskrcnn_jax.command_line import define_config_flag, run
from maskrcnn_jax.data.image_io import BrokenImageError, load_image
from maskrcnn_jax.evaluation.coco_results import encode_binary_masks, xyxy_to_xywh

_CONFIG = define_config_flag("model config file (default: the checkpoint's)")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "checkpoint directory or training workdir", required=True)
_OUTPUT = flags.DEFINE_string("output", None, "directory for the PNGs and detections.json", required=True)
_SCORE_THRESHOLD = flags.DEFINE_float("score_threshold", DEFAULT_SCORE_THRESHOLD, "keep detections scoring at least this")


def coco_entries(file_name: str, detections: dict) -> list[dict]:
    """COCO-style results entries (keyed by file name, with class names) for one image's detections."""
    rles = encode_binary_masks(detections["masks"])
    return [
        {"image": file_name, "category_id": int(label), "class_name": name, "bbox": [float(v) for v in box],
         "score": float(score), "segmentation": rle}
        for box, label, name, score, rle in zip(
            xyxy_to_xywh(detections["boxes"]), detections["classes"], detections["class_names"], detections["scores"], rles
        )
    ]


def main(argv: list[str]) -> int:
    image_paths = [pathlib.Path(path) for path in argv[1:]]
    if not image_paths:
        raise app.UsageError("give one or more image files after the flags")
    detector = Detector.from_checkpoint(_CHECKPOINT.value, config=_CONFIG.value, score_threshold=_SCORE_THRESHOLD.value)
    output = pathlib.Path(_OUTPUT.value)
    output.mkdir(parents=True, exist_ok=True)
    results, failed = [], 0
    for path in image_paths:
        try:
            image = load_image(path)
        except BrokenImageError as error:
            print(f"skipped {path}: {error}", file=sys.stderr)
            failed += 1
            continue
        detections = detector.detect([image])[0]
        detector.draw(image, detections).save(output / f"{path.stem}.png")
        results.extend(coco_entries(path.name, detections))
        print(f"{path.name}: {len(detections['scores'])} detections")
    (output / "detections.json").write_text(json.dumps(results))
    print(f"wrote {len(results)} detections for {len(image_paths) - failed} images to {output}")
    return 1 if failed else 0


if __name__ == "__main__":
    run(main, config_from_checkpoint=True)
