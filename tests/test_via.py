"""VIA -> COCO conversion: balloon against its reference COCO conversion, VIA 2 formats, bad input."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from maskrcnn_jax.data import via
from maskrcnn_jax.data.validation import DatasetFileError
from tests.conftest import shared_data_path

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _without_ids(dataset: dict) -> tuple[list, list]:
    """Images and annotations with ids replaced by file and category names (the reference val split
    numbers on from the train split)."""
    files = {i["id"]: i["file_name"] for i in dataset["images"]}
    names = {c["id"]: c["name"] for c in dataset["categories"]}
    images = [(i["file_name"], i["height"], i["width"]) for i in dataset["images"]]
    annotations = [(files[a["image_id"]], names[a["category_id"]], a["segmentation"], a["area"], a["bbox"],
                    a["iscrowd"]) for a in dataset["annotations"]]
    return images, annotations


@pytest.mark.parametrize("split", ["train", "val"])
def test_balloon_conversion_equals_reference_coco_json(split):
    entries = via.load_via_json(shared_data_path("balloon", "raw", split, "via_region_data.json"))
    reference = json.loads(shared_data_path("balloon", f"annotations_{split}.json").read_text())
    dataset, skipped = via.via_to_coco(entries, shared_data_path("balloon", "images"), default_category="balloon")
    assert not skipped
    assert _without_ids(dataset) == _without_ids(reference)
    assert dataset["categories"] == reference["categories"]


def test_script_converts_balloon_val(tmp_path):
    output = tmp_path / "val.json"
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "convert_via.py"),
         "--via", str(shared_data_path("balloon", "raw", "val", "via_region_data.json")),
         "--images", str(shared_data_path("balloon", "images")), "--output", str(output), "--category", "balloon"],
        capture_output=True, text=True, timeout=120, check=True)
    assert "13 images, 50 annotations" in result.stdout
    assert _without_ids(json.loads(output.read_text())) == _without_ids(
        json.loads(shared_data_path("balloon", "annotations_val.json").read_text()))


def test_via2_project_with_region_list_attributes_and_bad_regions(tmp_path):
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(tmp_path / "a.png")
    regions = [
        {"shape_attributes": {"name": "polygon", "all_points_x": [1, 11, 11], "all_points_y": [1, 1, 11]},
         "region_attributes": {"kind": "cat"}},
        {"shape_attributes": {"name": "rect", "x": 5, "y": 6, "width": 10, "height": 4},
         "region_attributes": {"kind": {"dog": True, "cat": False}}},
        {"shape_attributes": {"name": "polygon", "all_points_x": [1, 5], "all_points_y": [1, 5]},
         "region_attributes": {"kind": "cat"}},
        {"shape_attributes": {"name": "point", "cx": 3, "cy": 3}, "region_attributes": {}},
        {"shape_attributes": {"name": "rect", "x": 0, "y": 0, "width": 2, "height": 2}, "region_attributes": {}},
    ]
    project = {"_via_settings": {}, "_via_attributes": {}, "_via_img_metadata": {
        "a.png123": {"filename": "a.png", "size": 123, "regions": regions, "file_attributes": {}},
        "gone.png9": {"filename": "gone.png", "size": 9, "regions": [], "file_attributes": {}},
    }}
    path = tmp_path / "project.json"
    path.write_text(json.dumps(project))
    dataset, skipped = via.via_to_coco(via.load_via_json(path), tmp_path, category_attribute="kind",
                                       default_category="thing")
    assert skipped == {"polygon_fewer_than_3_points": 1, "unsupported_shape_point": 1,
                       "image_missing_or_unreadable": 1}
    assert dataset["images"] == [{"id": 1, "file_name": "a.png", "height": 30, "width": 40}]
    assert [c["name"] for c in dataset["categories"]] == ["cat", "dog", "thing"]
    triangle, rectangle, small = dataset["annotations"]
    assert triangle["category_id"] == 1 and triangle["bbox"] == [1.0, 1.0, 10.0, 10.0]
    assert rectangle["category_id"] == 2 and rectangle["segmentation"] == [[5.0, 6.0, 15.0, 6.0, 15.0, 10.0, 5.0, 10.0]]
    assert rectangle["bbox"] == [5.0, 6.0, 10.0, 4.0] and rectangle["area"] == 40.0
    assert small["category_id"] == 3 and small["image_id"] == 1


def test_not_a_via_file_fails_naming_it(tmp_path):
    path = tmp_path / "coco.json"
    path.write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    with pytest.raises(DatasetFileError, match="not a VIA region json") as error:
        via.load_via_json(path)
    assert str(path) in str(error.value)
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "convert_via.py"), "--via", str(path), "--images",
         str(tmp_path), "--output", str(tmp_path / "out.json")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "not a VIA region json" in result.stderr
