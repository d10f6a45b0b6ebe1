"""Detect objects in photos: one annotated PNG per image and one COCO results JSON for all of them.

    python scripts/predict.py --config CFG --checkpoint DIR --images IMG... --output DIR \
        [--score-threshold T] [--set key=value]

Each image is preprocessed as torchvision does (resize min/max size, pad to a multiple of 32), so
the model compiles once per padded size. Class names are COCO's (91 slots: label = COCO category id).
Writes DIR/<image stem>.png and DIR/detections.json, a list of
{"image": file name, "category_id", "bbox": [x, y, w, h], "score", "segmentation": RLE at the original size}.
A checkpoint converted from a torchvision model built with weights=None needs `--set model.backbone.bn_eps=1e-5`.
"""

import argparse
import json
import pathlib
import sys

import jax
import numpy as np

from maskrcnn_jax.checkpoint import load_params
from maskrcnn_jax.coco_classes import COCO_CLASS_NAMES
from maskrcnn_jax.config_file import load_config
from maskrcnn_jax.data.image_io import BrokenImageError, load_image
from maskrcnn_jax.evaluation.coco_results import encode_binary_masks, xyxy_to_xywh
from maskrcnn_jax.evaluation.mask_pasting import make_binary_mask_paster
from maskrcnn_jax.inference import make_predict_fn
from maskrcnn_jax.models import build_model
from maskrcnn_jax.preprocess import preprocess_batch
from maskrcnn_jax.visualize import draw_instances


def predict_image(predict, params, config, image: np.ndarray, score_threshold: float) -> dict[str, np.ndarray]:
    """Detections of one uint8 [H, W, 3] image above score_threshold: boxes [D, 4], scores, classes, masks bool [D, H, W]."""
    batch = preprocess_batch([image], config.input.min_size, config.input.max_size, None, config.input.size_divisible)
    outputs = jax.device_get(predict(params, batch["images"], batch["image_sizes"], batch["original_sizes"]))
    keep = outputs["valid"][0] & (outputs["scores"][0] >= score_threshold)
    # Paste all D slots (a fixed shape: one compile per image size), then keep the wanted ones.
    paste = make_binary_mask_paster(*image.shape[:2])
    pasted = np.asarray(paste(outputs["masks"][:1], outputs["boxes"][:1]))[0][keep]
    return {"boxes": outputs["boxes"][0][keep], "scores": outputs["scores"][0][keep], "classes": outputs["classes"][0][keep], "masks": pasted}


def coco_entries(file_name: str, detections: dict[str, np.ndarray]) -> list[dict]:
    """COCO results entries (keyed by file name) for one image's detections."""
    rles = encode_binary_masks(detections["masks"])
    return [
        {"image": file_name, "category_id": int(label), "bbox": [float(v) for v in box], "score": float(score), "segmentation": rle}
        for box, label, score, rle in zip(xyxy_to_xywh(detections["boxes"]), detections["classes"], detections["scores"], rles)
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="model config file, e.g. configs/mask_rcnn_r50_fpn_coco.py")
    parser.add_argument("--checkpoint", required=True, help="parameter checkpoint directory (convert_torchvision.py output)")
    parser.add_argument("--images", required=True, nargs="+", help="image files")
    parser.add_argument("--output", required=True, help="directory for the PNGs and detections.json")
    parser.add_argument("--score-threshold", type=float, default=0.5, help="keep detections scoring at least this (default %(default)s)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, repeatable")
    args = parser.parse_args(argv)

    config = load_config(args.config, args.set)
    model = build_model(config)
    params = load_params(args.checkpoint)
    predict = make_predict_fn(model, config)
    output = pathlib.Path(args.output)
    output.mkdir(parents=True, exist_ok=True)

    results, failed = [], 0
    for path in map(pathlib.Path, args.images):
        try:
            image = load_image(path)
        except BrokenImageError as error:
            print(f"skipped {path}: {error}", file=sys.stderr)
            failed += 1
            continue
        detections = predict_image(predict, params, config, image, args.score_threshold)
        picture = draw_instances(image, detections["boxes"], detections["classes"], detections["masks"], COCO_CLASS_NAMES, detections["scores"])
        picture.save(output / f"{path.stem}.png")
        results.extend(coco_entries(path.name, detections))
        print(f"{path.name}: {len(detections['scores'])} detections")
    (output / "detections.json").write_text(json.dumps(results))
    print(f"wrote {len(results)} detections for {len(args.images) - failed} images to {output}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
