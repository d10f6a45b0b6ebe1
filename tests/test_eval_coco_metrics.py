"""Results-file scoring against published COCOeval numbers, error handling, and the script's results mode."""

import contextlib
import copy
import io
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from pycocotools.cocoeval import COCOeval

from maskrcnn_jax.evaluation.coco_metrics import (
    STAT_NAMES,
    evaluate_results,
    load_coco_ground_truth,
    read_results_files,
)
from conftest import shared_data_path

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _load_json(path):
    with open(path) as f:
        return json.load(f)


def _assert_stats_equal(metrics: dict, expected: dict, tolerance: float = 1e-12):
    for name in STAT_NAMES:
        assert metrics[name] == pytest.approx(expected[name], abs=tolerance), name


def test_detectron2_tiny_reproduces_published_bbox_and_segm():
    folder = shared_data_path("cocoeval", "detectron2_tiny")
    expected = _load_json(folder / "expected.json")
    scores = evaluate_results(load_coco_ground_truth(folder / "gt.json"), _load_json(folder / "dt.json"))
    assert set(scores.metrics) == {"bbox", "segm"}
    for iou_type in ("bbox", "segm"):
        _assert_stats_equal(scores.metrics[iou_type], expected[iou_type])
        assert "Average Precision" in scores.tables[iou_type]


def test_fce_small_rle_without_bbox_reproduces_published_segm():
    folder = shared_data_path("cocoeval", "fce_small")
    expected = _load_json(folder / "expected.json")
    scores = evaluate_results(
        load_coco_ground_truth(folder / "gt_dataset.json"), _load_json(folder / "dt_dataset_rle_nobbox.json")
    )
    assert set(scores.metrics) == {"segm"}  # no entry has a box, so there is nothing to score for bbox
    _assert_stats_equal(scores.metrics["segm"], expected["segm"])


def test_val2014_100_reproduces_published_cocoapi_numbers():
    folder = shared_data_path("cocoeval", "val2014_100")
    expected = _load_json(folder / "expected.json")
    results = _load_json(folder / "instances_val2014_fakebbox100_results.json") + _load_json(
        folder / "instances_val2014_fakesegm100_results.json"
    )
    scores = evaluate_results(load_coco_ground_truth(folder / "instances_val2014_100.json"), results)
    for iou_type in ("bbox", "segm"):
        _assert_stats_equal(scores.metrics[iou_type], expected[iou_type])


@pytest.fixture(scope="module")
def tiny_folder():
    return shared_data_path("cocoeval", "detectron2_tiny")


@pytest.fixture(scope="module")
def tiny_gt(tiny_folder):
    return load_coco_ground_truth(tiny_folder / "gt.json")


def test_per_category_ap_equals_cocoeval_restricted_to_that_category(tiny_gt, tiny_folder):
    detections = _load_json(tiny_folder / "dt.json")
    scores = evaluate_results(tiny_gt, detections, iou_types=("bbox",))
    for category_id in tiny_gt.getCatIds():
        coco_eval = COCOeval(tiny_gt, tiny_gt.loadRes(copy.deepcopy(detections)), "bbox")
        coco_eval.params.catIds = [category_id]
        with contextlib.redirect_stdout(io.StringIO()):
            coco_eval.evaluate()
            coco_eval.accumulate()
            coco_eval.summarize()
        name = tiny_gt.cats[category_id]["name"]
        assert scores.per_category_ap["bbox"][name] == pytest.approx(coco_eval.stats[0], abs=1e-12)
    assert scores.per_category_ap["bbox"]["bed"] == -1.0  # category 65 has no GT


def test_empty_results_score_zero_not_crash(tiny_gt):
    scores = evaluate_results(tiny_gt, [])
    # The two GT persons are small and medium; no GT is large, so those entries are -1.
    for iou_type in ("bbox", "segm"):
        for name in STAT_NAMES:
            assert scores.metrics[iou_type][name] == (-1.0 if name in ("APl", "ARl") else 0.0), (iou_type, name)


def test_unknown_image_id_is_a_clear_error(tiny_gt, tiny_folder):
    detections = _load_json(tiny_folder / "dt.json")
    detections[1]["image_id"] = 999
    with pytest.raises(ValueError, match=r"image ids .* not in the ground truth.*999"):
        evaluate_results(tiny_gt, detections)


def test_image_id_of_the_wrong_type_and_non_dict_results_are_clear_errors(tiny_gt, tiny_folder):
    detections = _load_json(tiny_folder / "dt.json")
    detections[0]["image_id"] = "139"
    with pytest.raises(ValueError, match=r"not in the ground truth, e.g. \['139'\]"):
        evaluate_results(tiny_gt, detections)
    with pytest.raises(ValueError, match=r"results \[1\] are not dicts"):
        evaluate_results(tiny_gt, [_load_json(tiny_folder / "dt.json")[0], [417, 159, 47, 143]])


def test_unknown_category_id_is_a_clear_error(tiny_gt, tiny_folder):
    detections = _load_json(tiny_folder / "dt.json")
    detections[2]["category_id"] = 3  # a contiguous label, not one of the dataset's ids {1, 65}
    with pytest.raises(ValueError, match=r"category ids \[3\]"):
        evaluate_results(tiny_gt, detections)


def test_mask_of_the_wrong_size_is_a_clear_error(tiny_gt, tiny_folder):
    detections = _load_json(tiny_folder / "dt.json")
    detections[0]["segmentation"]["size"] = [320, 480]
    with pytest.raises(ValueError, match=r"result 0 .*size \[320, 480\] is not the image.s \[426, 640\]"):
        evaluate_results(tiny_gt, detections)


def test_asking_segm_of_box_only_results_is_a_clear_error(tiny_gt, tiny_folder):
    boxes_only = [{k: v for k, v in d.items() if k != "segmentation"} for d in _load_json(tiny_folder / "dt.json")]
    with pytest.raises(ValueError, match="cannot score segm"):
        evaluate_results(tiny_gt, boxes_only, iou_types=("bbox", "segm"))


def test_results_files_are_concatenated_and_unreadable_ones_named(tiny_gt, tiny_folder, tmp_path):
    detections = _load_json(tiny_folder / "dt.json")
    expected = _load_json(tiny_folder / "expected.json")
    # A bbox file and a segm file, as detectron2 writes them, score as one list.
    (tmp_path / "boxes.json").write_text(json.dumps([{k: v for k, v in d.items() if k != "segmentation"} for d in detections]))
    (tmp_path / "masks.json").write_text(json.dumps([{k: v for k, v in d.items() if k != "bbox"} for d in detections]))
    boxes_only = read_results_files([tmp_path / "boxes.json"])
    assert set(evaluate_results(tiny_gt, boxes_only).metrics) == {"bbox"}
    both = evaluate_results(tiny_gt, read_results_files([tmp_path / "boxes.json", tmp_path / "masks.json"])).metrics
    for iou_type in ("bbox", "segm"):
        _assert_stats_equal(both[iou_type], expected[iou_type])

    (tmp_path / "truncated.json").write_text('[{"image_id": 139, ')
    with pytest.raises(ValueError, match="cannot read results file .*truncated.json"):
        read_results_files([tmp_path / "truncated.json"])
    (tmp_path / "dict.json").write_text("{}")
    with pytest.raises(ValueError, match="dict.json is not a COCO results file"):
        read_results_files([tmp_path / "dict.json"])


def test_script_results_mode_writes_metrics_json(tiny_folder, tmp_path):
    expected = _load_json(tiny_folder / "expected.json")
    command = [sys.executable, "scripts/evaluate.py", "--annotations", str(tiny_folder / "gt.json"),
               "--output", str(tmp_path / "out"), "--results", str(tiny_folder / "dt.json"), "--per_category"]
    printed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, check=True).stdout
    metrics = _load_json(tmp_path / "out" / "metrics.json")
    assert set(metrics) == {"bbox", "segm"} and all(list(metrics[t]) == list(STAT_NAMES) for t in metrics)
    for iou_type in ("bbox", "segm"):
        _assert_stats_equal(metrics[iou_type], expected[iou_type])
    assert "person" in printed and set(_load_json(tmp_path / "out" / "per_category_ap.json")) == {"bbox", "segm"}

    unknown = _load_json(tiny_folder / "dt.json")
    unknown[0]["image_id"] = 4
    (tmp_path / "unknown.json").write_text(json.dumps(unknown))
    failed = subprocess.run(command[:-2] + [str(tmp_path / "unknown.json")], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert failed.returncode != 0 and "not in the ground truth" in failed.stderr
