"""TFDS ArrayRecord dataset with masks: written without TF, read back identical to the COCO source."""

import json
import pickle
import pathlib
import subprocess
import sys

import grain
import numpy as np
import pytest

from maskrcnn_jax.data import coco
from maskrcnn_jax.data import shapes
from maskrcnn_jax.data import tfds_builder
from maskrcnn_jax.data import tfds_source
from tests.conftest import shared_data_path

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Shapes written by the script: image 2 without annotations, image 3 a truncated PNG."""
    root = tmp_path_factory.mktemp("tfds")
    shapes_file = shapes.write_shapes_dataset(root / "shapes", 6, seed=5, min_size=48, max_size=64)
    dataset = json.loads(shapes_file.read_text())
    dataset["annotations"] = [a for a in dataset["annotations"] if a["image_id"] != 2]
    shapes_file.write_text(json.dumps(dataset))
    broken = root / "shapes" / "images" / "000003.png"
    broken.write_bytes(broken.read_bytes()[:100])
    command = [sys.executable, str(REPO_ROOT / "scripts" / "build_tfds.py"), "--data_dir", str(root / "tfds"),
               "--split", f"train,{shapes_file},{root / 'shapes' / 'images'}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=True)
    return root, shapes_file, result.stdout


def _assert_same_records(left, right):
    assert len(left) == len(right)
    for index in range(len(left)):
        a, b = left[index], right[index]
        assert a.keys() == b.keys()
        for key in a:
            assert type(a[key]) is type(b[key])
            np.testing.assert_array_equal(a[key], b[key])
            if isinstance(a[key], np.ndarray):
                assert a[key].dtype == b[key].dtype


def test_tfds_records_equal_coco_source_and_broken_image_is_left_out_and_listed(built):
    root, shapes_file, output = built
    source = tfds_source.TfdsSource(root / "tfds", "train")
    reference = coco.CocoSource(shapes_file, root / "shapes" / "images")
    assert "broken image left out" in output and "000003.png" in output
    assert len(source.broken_images) == 1 and source.broken_images[0][0].endswith("000003.png")
    kept = [i for i, e in enumerate(reference.entries) if e.file_name != "000003.png"]
    assert len(source) == len(kept) == 5
    for index, reference_index in enumerate(kept):
        a, b = source[index], reference[reference_index]
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
        assert source.image_size(index) == reference.image_size(reference_index) == a["image"].shape[:2]
    assert source.label_to_category_id == reference.label_to_category_id
    assert source.class_names == reference.class_names and source.num_classes == 4
    assert "tensorflow" not in sys.modules


def test_tfds_source_pickles_and_feeds_grain(built):
    root, _, _ = built
    source = tfds_source.TfdsSource(root / "tfds", "train")
    copy = pickle.loads(pickle.dumps(source))
    _assert_same_records(copy, source)
    via_grain = list(grain.MapDataset.source(source).map(lambda r: r["image_id"]))
    assert via_grain == [source[i]["image_id"] for i in range(len(source))]


def test_labelme_voc3_round_trip_keeps_image_id_zero_and_label_map(tmp_path):
    annotation_file = shared_data_path("labelme_voc3", "annotations.json")
    image_dir = shared_data_path("labelme_voc3", "images")
    tfds_builder.CocoInstances(splits={"val": (annotation_file, image_dir)}, data_dir=tmp_path,
                               file_format="array_record").download_and_prepare()
    source = tfds_source.TfdsSource(tmp_path, "val")
    reference = coco.CocoSource(annotation_file, image_dir)
    _assert_same_records(source, reference)
    assert source.label_to_category_id == reference.label_to_category_id
    assert source[0]["image_id"] == 0 and source.num_images_without_annotations == 0


def test_images_without_annotations_can_be_skipped(built):
    root, _, _ = built
    everything = tfds_source.TfdsSource(root / "tfds", "train")
    with_instances = tfds_source.TfdsSource(root / "tfds", "train", skip_images_without_annotations=True)
    assert everything.num_images_without_annotations == 1
    assert [everything[i]["image_id"] for i in range(len(everything))] == [1, 2, 4, 5, 6]
    assert [with_instances[i]["image_id"] for i in range(len(with_instances))] == [1, 4, 5, 6]


def test_broken_annotation_file_exits_1_naming_it(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("[]")
    result = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "build_tfds.py"), "--data_dir",
                             str(tmp_path / "t"), "--split", f"train,{path},{tmp_path}"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and str(path) in result.stderr and "top level is a JSON list" in result.stderr


def test_existing_dataset_is_rebuilt_only_with_overwrite(tmp_path):
    annotation_file = shapes.write_shapes_dataset(tmp_path / "shapes", 3, seed=0, min_size=32, max_size=32)
    command = [sys.executable, str(REPO_ROOT / "scripts" / "build_tfds.py"), "--data_dir", str(tmp_path / "t"),
               "--split", f"train,{annotation_file},{tmp_path / 'shapes' / 'images'}"]
    subprocess.run(command, capture_output=True, text=True, timeout=300, check=True)
    dataset = json.loads(annotation_file.read_text())
    dataset["annotations"] = [a for a in dataset["annotations"] if a["image_id"] != 1]
    annotation_file.write_text(json.dumps(dataset))
    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 1 and "--overwrite" in again.stderr
    assert tfds_source.TfdsSource(tmp_path / "t", "train").num_images_without_annotations == 0
    subprocess.run(command + ["--overwrite"], capture_output=True, text=True, timeout=300, check=True)
    rebuilt = tfds_source.TfdsSource(tmp_path / "t", "train")
    assert rebuilt.num_images_without_annotations == 1 and len(rebuilt[0]["labels"]) == 0
