"""Detections -> COCO results entries, checked against pycocotools' own decoding and hand-computed boxes."""

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from maskrcnn_jax.evaluation.coco_metrics import evaluate_results, load_coco_ground_truth
from maskrcnn_jax.evaluation.coco_results import encode_mask_windows, image_detections_to_coco, xyxy_to_xywh
from maskrcnn_jax.inference.mask_windows import MaskWindow, masks_from_windows
from conftest import shared_data_path


def encode_binary_masks(binary_masks: np.ndarray) -> list:
    """[D,H,W] bool/uint8 full-image masks -> D compressed RLE dicts {"size": [H, W], "counts": str}:
    pycocotools' encoding of whole masks, the reference for `encode_mask_windows`."""
    if len(binary_masks) == 0:
        return []
    # pycocotools encodes column-major [H,W,D] uint8 in one C call.
    rles = mask_utils.encode(np.asfortranarray(np.transpose(binary_masks, (1, 2, 0)), dtype=np.uint8))
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")  # str so the entry is json-serialisable
    return rles


def test_xyxy_to_xywh_hand_values():
    boxes = np.array([[10.0, 20.0, 30.5, 60.0], [0.0, 0.0, 1.0, 2.0]], np.float32)
    np.testing.assert_array_equal(xyxy_to_xywh(boxes), [[10.0, 20.0, 20.5, 40.0], [0.0, 0.0, 1.0, 2.0]])


def test_encoded_masks_decode_to_the_same_pixels_area_and_box():
    rng = np.random.default_rng(0)
    masks = np.zeros((3, 37, 53), bool)
    masks[0, 5:20, 7:9] = True
    masks[1] = rng.random((37, 53)) > 0.7
    # masks[2] stays empty: a detection whose mask vanished after thresholding
    rles = encode_binary_masks(masks)
    assert all(isinstance(r["counts"], str) and r["size"] == [37, 53] for r in rles)
    np.testing.assert_array_equal(mask_utils.decode(rles).transpose(2, 0, 1), masks)
    np.testing.assert_array_equal(mask_utils.area(rles), masks.sum(axis=(1, 2)))
    np.testing.assert_array_equal(mask_utils.toBbox(rles)[0], [7, 5, 2, 15])  # x, y, w, h of the block
    assert encode_binary_masks(np.zeros((0, 37, 53), bool)) == []


def test_windows_encode_as_pycocotools_encodes_their_full_masks():
    """The RLE computed from the windows alone equals pycocotools' encoding of the full masks, string
    for string: windows at every edge (a run crossing from one column's bottom into the next
    column's top, a run reaching the last pixel), empty windows, empty and full masks, one-pixel images."""
    rng = np.random.default_rng(0)
    for height, width in ((7, 5), (1, 1), (3, 9), (6, 1)):
        for _ in range(200):
            windows = []
            for _ in range(rng.integers(1, 5)):
                top, left = rng.integers(0, height + 1), rng.integers(0, width + 1)
                rows, columns = rng.integers(0, height - top + 1), rng.integers(0, width - left + 1)
                density = rng.choice([0.0, 0.1, 0.5, 0.95, 1.0])
                windows.append(MaskWindow(int(top), int(left), rng.random((rows, columns)) < density))
            expected = encode_binary_masks(masks_from_windows(windows, height, width))
            assert encode_mask_windows(windows, height, width) == expected, windows
    assert encode_mask_windows([], 4, 4) == []


def test_ground_truth_as_detections_scores_ap_one():
    """GT instances of real COCO images, turned into detections through the label mapping, score 1.0."""
    folder = shared_data_path("coco_val2014_43")
    coco_gt = load_coco_ground_truth(folder / "annotations.json")
    label_to_category_id = {label: cat for label, cat in enumerate(sorted(coco_gt.getCatIds()), start=1)}
    category_to_label = {cat: label for label, cat in label_to_category_id.items()}
    image_ids = sorted(coco_gt.getImgIds())[:5]
    results = []
    for image_id in image_ids:
        annotations = [a for a in coco_gt.imgToAnns[image_id] if not a["iscrowd"]]
        boxes_xywh = np.array([a["bbox"] for a in annotations], np.float64)
        boxes_xyxy = np.concatenate([boxes_xywh[:, :2], boxes_xywh[:, :2] + boxes_xywh[:, 2:]], axis=1)
        results += image_detections_to_coco(
            image_id,
            boxes_xyxy,
            scores=np.linspace(0.9, 0.5, len(annotations)),
            labels=np.array([category_to_label[a["category_id"]] for a in annotations]),
            label_to_category_id=label_to_category_id,
            segmentations=encode_binary_masks(np.stack([coco_gt.annToMask(a) for a in annotations])),
        )
    assert {r["category_id"] for r in results} <= set(coco_gt.getCatIds())
    np.testing.assert_allclose(results[0]["bbox"], coco_gt.imgToAnns[image_ids[0]][0]["bbox"], atol=1e-12)
    metrics = evaluate_results(coco_gt, results, image_ids=image_ids).metrics
    for iou_type in ("bbox", "segm"):
        assert metrics[iou_type]["AP"] == pytest.approx(1.0, abs=1e-12), iou_type
        assert metrics[iou_type]["AR100"] == pytest.approx(1.0, abs=1e-12), iou_type
    # The same detections scored over all 43 images miss the GT of the other 38.
    assert evaluate_results(coco_gt, results).metrics["bbox"]["AR100"] < 0.5
