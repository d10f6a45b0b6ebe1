"""Detections on orientation canvases against those on one large canvas, image by image: how much
a tighter canvas changes what a model finds (docs/benchmarks.md, issue 21).

A canvas changes more than the padding's extent: after the first convolution and its norm's bias the
padded area is no longer zero, so the features of the last rows and columns of a photo differ
between a tight and a large canvas, and P6's anchor stride is canvas // feature size (800 // 13 = 61
on 800x1344, 1344 // 21 = 64 on 1344x1344: torchvision's rule), so large anchors sit elsewhere.

Legend: D detections per image.
"""

from typing import Sequence

import numpy as np

from maskrcnn_jax.data.pipeline import evaluation_dataset
from maskrcnn_jax.detector import make_predict_fn, prediction_inputs, spec_from_config
from maskrcnn_jax.models import build_model

MATCH_IOU = 0.99


def detections_by_image(config, params, source, canvases: Sequence[tuple[int, int]]) -> dict[int, dict]:
    """{image_id: {"boxes" float32 [D, 4] original pixels, "classes" int32 [D], "scores" [D]}} of every
    record of `source`, each on its canvas among `canvases` (`data.grouping`), batch 1, the image as
    evaluation feeds it (float32, torchvision's resize)."""
    predict = make_predict_fn(build_model(config), spec_from_config(config))
    # max_instances 1: the ground truth is not used (its dropped instances are logged, rate-limited).
    batches = evaluation_dataset(source, global_batch_size=1, canvas_size=canvases[0], canvases=canvases,
                                 min_size=config.input.min_size, max_size=config.input.max_size, max_instances=1,
                                 shard_index=0, shard_count=1)
    found = {}
    for batch in batches:
        outputs = predict(params, prediction_inputs(batch))
        valid = np.asarray(outputs["valid"][0])
        found[int(batch["image_id"][0])] = {name: np.asarray(outputs[name][0])[valid]
                                            for name in ("boxes", "classes", "scores")}
    return found


def box_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """IoU of xyxy boxes [N, 4] x [M, 4] -> [N, M]."""
    top_left = np.maximum(boxes_a[:, None, :2], boxes_b[None, :, :2])
    bottom_right = np.minimum(boxes_a[:, None, 2:], boxes_b[None, :, 2:])
    intersection = np.prod(np.clip(bottom_right - top_left, 0, None), axis=-1)
    area_a = np.prod(boxes_a[:, 2:] - boxes_a[:, :2], axis=-1)
    area_b = np.prod(boxes_b[:, 2:] - boxes_b[:, :2], axis=-1)
    return intersection / np.maximum(area_a[:, None] + area_b[None, :] - intersection, 1e-12)


def matched(reference: dict, other: dict, iou: float = MATCH_IOU) -> np.ndarray:
    """bool [D of reference]: whether `other` has a detection of the same class with box IoU >= iou."""
    if len(reference["boxes"]) == 0 or len(other["boxes"]) == 0:
        return np.zeros(len(reference["boxes"]), bool)
    ious = box_iou(reference["boxes"], other["boxes"])
    ious[reference["classes"][:, None] != other["classes"][None, :]] = 0
    return ious.max(axis=1) >= iou
