"""scripts/inspect_dataset.py run as a new user would: counts agree with pycocotools, bad input is reported."""

import json
import pathlib
import re
import subprocess
import sys

import pytest
from PIL import Image
from pycocotools.coco import COCO

from tests.conftest import shared_data_path

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
CATEGORY_LINE = re.compile(r"^\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+\S")


def _inspect(*arguments, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "inspect_dataset.py"), *map(str, arguments)],
                          capture_output=True, text=True, timeout=300, cwd=cwd)


def _per_category(stdout: str) -> dict[int, tuple[int, int]]:
    """category_id -> (instances, images) from the script's table."""
    rows = [CATEGORY_LINE.match(line) for line in stdout.splitlines()]
    return {int(m[2]): (int(m[3]), int(m[4])) for m in rows if m}


def _expected_per_category(annotation_file: pathlib.Path) -> dict[int, tuple[int, int]]:
    reference = COCO(str(annotation_file))
    expected = {}
    for category_id in reference.getCatIds():
        annotations = reference.loadAnns(reference.getAnnIds(catIds=[category_id], iscrowd=False))
        expected[category_id] = (len(annotations), len({a["image_id"] for a in annotations}))
    return expected


@pytest.mark.parametrize("name, annotations, images", [
    ("coco_train2017_85", "coco_train2017_85/annotations.json", "coco_train2017_85/images"),
    ("coco_val2014_43", "coco_val2014_43/annotations.json", "coco_val2014_43/images"),
])
def test_counts_agree_with_pycocotools_and_pictures_are_written(tmp_path, name, annotations, images):
    annotation_file = shared_data_path(annotations)
    result = _inspect("--annotations", annotation_file, "--images", shared_data_path(images), "--output", tmp_path,
                      cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert _per_category(result.stdout) == _expected_per_category(annotation_file)
    reference = json.loads(annotation_file.read_text())
    crowd = sum(1 for a in reference["annotations"] if a.get("iscrowd"))
    assert f"images: {len(reference['images'])} " in result.stdout
    assert f"crowd annotations: {crowd} " in result.stdout
    assert "skipped annotations: none" in result.stdout and "broken images: 0 of" in result.stdout
    pictures = sorted(tmp_path.glob("*.png"))
    assert len(pictures) == 4
    for picture in pictures:
        image_id = int(picture.name.split("_")[0])
        info = next(i for i in reference["images"] if i["id"] == image_id)
        assert Image.open(picture).size == (info["width"], info["height"])


def test_labelme_background_category_is_reported():
    result = _inspect("--annotations", shared_data_path("labelme_voc3", "annotations.json"),
                      "--images", shared_data_path("labelme_voc3", "images"))
    assert result.returncode == 0, result.stderr
    assert "category id 0 is named '_background_'" in result.stdout
    assert "training instances: 12, categories: 20" in result.stdout


def test_corrupt_image_and_two_point_polygon_are_reported_without_crashing(tmp_path):
    source_images = shared_data_path("coco_train2017_85", "images")
    annotation_file = shared_data_path("coco_train2017_85", "annotations.json")
    dataset = json.loads(annotation_file.read_text())
    images = tmp_path / "images"
    images.mkdir()
    for info in dataset["images"]:
        (images / info["file_name"]).symlink_to(source_images / info["file_name"])
    truncated_name = dataset["images"][1]["file_name"]
    (images / truncated_name).unlink()
    data = (source_images / truncated_name).read_bytes()
    (images / truncated_name).write_bytes(data[: len(data) // 3])
    bad_annotation = dataset["annotations"][0]
    bad_annotation["segmentation"] = [bad_annotation["segmentation"][0][:4]]
    copy = tmp_path / "annotations.json"
    copy.write_text(json.dumps(dataset))

    result = _inspect("--annotations", copy, "--images", images, "--output", tmp_path / "drawn", "--num_drawn", "2")
    assert result.returncode == 0, result.stderr
    assert "skipped annotations: polygon_fewer_than_3_points: 1" in result.stdout
    assert f"broken images: 1 of {len(dataset['images'])} checked" in result.stdout
    assert re.search(rf"broken image: \S*{re.escape(truncated_name)}: cannot decode", result.stdout)
    # The counts are those of the file without the 2-point polygon (the truncated image keeps its annotations).
    dataset["annotations"] = dataset["annotations"][1:]
    without_bad = tmp_path / "without_bad.json"
    without_bad.write_text(json.dumps(dataset))
    assert _per_category(result.stdout) == _expected_per_category(without_bad)
    assert len(list((tmp_path / "drawn").glob("*.png"))) == 2


@pytest.mark.parametrize("content, problem", [
    ("this is not json", "not valid JSON"),
    ('{"images": [], "categories": []}', "missing key(s) ['annotations']"),
])
def test_broken_annotation_file_exits_non_zero_naming_file_and_problem(tmp_path, content, problem):
    path = tmp_path / "annotations.json"
    path.write_text(content)
    result = _inspect("--annotations", path, "--images", tmp_path)
    assert result.returncode == 1
    assert str(path) in result.stderr and problem in result.stderr
