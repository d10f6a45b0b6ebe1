"""End to end: our evaluation of converted torchvision weights gives torchvision's own AP.

torchvision runs its own model, pastes its own masks and its results are scored by pycocotools;
we run the converted weights through the grain evaluation pipeline, `evaluate_model` (device
paste, RLE, COCOeval). Both are scored on the same pseudo ground truth: torchvision's most
confident detections, jittered, so AP lands mid-range where a small disagreement shows (random
weights score about 0 against real COCO ground truth, which would prove nothing).
"""

import pathlib

import contextlib
import io

import jax
import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from conftest import shared_data_path
from maskrcnn_jax.command_line import load_config_file
from maskrcnn_jax.convert.torchvision import convert_state_dict
from maskrcnn_jax.data.coco import CocoSource
from maskrcnn_jax.data.pipeline import evaluation_dataset
from maskrcnn_jax.data.transforms import resized_shape
from maskrcnn_jax.detector import make_predict_fn, spec_from_config
from maskrcnn_jax.evaluation.coco_metrics import STAT_NAMES, evaluate_results
from maskrcnn_jax.evaluation.evaluator import evaluate_model
from maskrcnn_jax.models import build_model
from maskrcnn_jax.inference.preprocess import padded_canvas_size

torch = pytest.importorskip("torch")
torchvision_reference = pytest.importorskip("torchvision_reference")

NUM_IMAGES = 4
MIN_SIZE, MAX_SIZE = 320, 512
# Fewer proposals and detections than torchvision's defaults, set identically on both sides, keep
# the two R50-FPN runs within the test budget on a 2-core CPU.
POST_NMS_TOP_N = 300
DETECTIONS_PER_IMAGE = 20
GT_PER_IMAGE = 8
CONFIG_FILE = pathlib.Path(__file__).resolve().parents[1] / "configs" / "mask_rcnn_r50_fpn_coco.py"


def _rle(binary_mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(binary_mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _torchvision_results(outputs, image_ids) -> list:
    """torchvision's detections as COCO results: its own pasted masks thresholded at 0.5; label = COCO id."""
    results = []
    for image_id, output in zip(image_ids, outputs):
        boxes = output["boxes"].numpy().astype(np.float64)
        masks = output["masks"][:, 0].numpy() > 0.5
        for box, label, score, mask in zip(boxes, output["labels"].tolist(), output["scores"].tolist(), masks):
            xywh = [box[0], box[1], box[2] - box[0], box[3] - box[1]]
            results.append({"image_id": image_id, "category_id": label, "bbox": [float(v) for v in xywh],
                            "score": score, "segmentation": _rle(mask)})
    return results


def _pseudo_ground_truth(outputs, records) -> COCO:
    """The GT_PER_IMAGE most confident torchvision detections per image, perturbed (seeded): boxes
    jittered by ~8% of their size, masks thresholded at a random level in [0.4, 0.6] instead of 0.5
    (random-weight masks are stripy: shifting them would leave almost no overlap)."""
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for record, output in zip(records, outputs):
        height, width = record["image"].shape[:2]
        images.append({"id": record["image_id"], "height": height, "width": width, "file_name": record["file_name"]})
        detections = zip(output["boxes"].numpy(), output["labels"].tolist(), output["masks"][:, 0].numpy())
        for box, label, mask_probs in list(detections)[:GT_PER_IMAGE]:
            size = np.array([box[2] - box[0], box[3] - box[1]] * 2)
            x1, y1, x2, y2 = np.clip(box + rng.normal(0, 0.08, 4) * size, 0, [width, height, width, height])
            mask = mask_probs > rng.uniform(0.4, 0.6)
            annotations.append({"id": len(annotations) + 1, "image_id": record["image_id"], "category_id": label,
                                "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
                                "segmentation": _rle(mask), "area": float(mask.sum()), "iscrowd": 0})
    coco = COCO()
    coco.dataset = {"images": images, "annotations": annotations,
                    "categories": [{"id": i, "name": str(i)} for i in range(1, 91)]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


@pytest.fixture(scope="module")
def both_evaluations():
    folder = shared_data_path("coco_val2014_43")
    source = CocoSource(folder / "annotations.json", folder / "images")
    records = [source[i] for i in range(NUM_IMAGES)]
    image_ids = [record["image_id"] for record in records]

    torch.set_num_threads(2)
    reference = torchvision_reference.confident_random_torchvision_maskrcnn(seed=0, min_size=MIN_SIZE, max_size=MAX_SIZE)
    reference.rpn._post_nms_top_n["testing"] = POST_NMS_TOP_N
    reference.roi_heads.detections_per_img = DETECTIONS_PER_IMAGE
    with torch.no_grad():
        outputs = reference([torch.from_numpy(record["image"].copy()).permute(2, 0, 1).float() / 255 for record in records])
    coco_gt = _pseudo_ground_truth(outputs, records)
    reference_metrics = evaluate_results(coco_gt, _torchvision_results(outputs, image_ids)).metrics

    # torchvision padded its one batch to a multiple of 32 of the largest resized image: use that
    # canvas, so both systems see the same padded input.
    shapes = [resized_shape(*record["image"].shape[:2], MIN_SIZE, MAX_SIZE) for record in records]
    canvas = padded_canvas_size(max(h for h, _ in shapes), max(w for _, w in shapes))
    config = load_config_file(CONFIG_FILE)
    config.model.backbone.bn_eps = 1e-5  # torchvision's BatchNorm2d (a model built with weights=None)
    config.test.rpn_post_nms_top_n = POST_NMS_TOP_N
    config.test.detections_per_image = DETECTIONS_PER_IMAGE
    model = build_model(config)
    expected_params = jax.eval_shape(lambda: model.init(jax.random.key(0), np.zeros((1, 64, 64, 3), np.float32))["params"])
    params = convert_state_dict({k: v.numpy() for k, v in reference.state_dict().items()}, expected_params)
    # Batches of 3: the second batch carries 2 padding examples (valid=False) that must not count.
    batches = evaluation_dataset(records, global_batch_size=3, canvas_size=canvas, min_size=MIN_SIZE,
                                 max_size=MAX_SIZE, max_instances=max(len(r["boxes"]) for r in records),
                                 shard_index=0, shard_count=1)
    predict = make_predict_fn(model, spec_from_config(config))
    our_metrics = evaluate_model(predict, params, batches, coco_gt, {i: i for i in range(1, 91)})
    return reference_metrics, our_metrics


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_our_ap_equals_torchvision_ap_within_0_2_points(both_evaluations, iou_type):
    reference_metrics, our_metrics = both_evaluations
    reference, ours = reference_metrics[iou_type], our_metrics[iou_type]
    # The pseudo ground truth puts AP mid-range, where a disagreement in boxes or masks would show.
    assert 0.1 < reference["AP"] < 0.9, reference
    for name in STAT_NAMES:
        assert abs(ours[name] - reference[name]) <= 0.002, (name, ours, reference)

