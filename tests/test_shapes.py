"""Synthetic shapes: exact geometry, occlusion, determinism, and the written COCO dataset."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from pycocotools.coco import COCO

from maskrcnn_jax.data import coco
from maskrcnn_jax.data import shapes

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_square_mask_is_the_exact_pixel_block():
    mask = shapes.shape_mask(shapes.Shape(shapes.SQUARE, 10.0, 12.0, 8.0, 0.0, (0, 0, 0)), 20, 24)
    expected = np.zeros((20, 24), dtype=bool)
    expected[8:16, 6:14] = True  # pixel centres 6.5..13.5 lie within 10 +- 4
    np.testing.assert_array_equal(mask, expected)


@pytest.mark.parametrize("angle", [0.0, 0.7, 2.0])
def test_circle_and_triangle_areas_and_centres_match_geometry(angle):
    size = 60.0
    circle = shapes.shape_mask(shapes.Shape(shapes.CIRCLE, 50.0, 40.0, size, angle, (0, 0, 0)), 100, 100)
    triangle = shapes.shape_mask(shapes.Shape(shapes.TRIANGLE, 50.0, 40.0, size, angle, (0, 0, 0)), 100, 100)
    assert abs(circle.sum() / (np.pi * (size / 2) ** 2) - 1) < 0.02
    assert abs(triangle.sum() / (np.sqrt(3) / 4 * size**2) - 1) < 0.03
    for mask in (circle, triangle):
        rows, columns = np.nonzero(mask)
        assert abs(columns.mean() + 0.5 - 50.0) < 0.5 and abs(rows.mean() + 0.5 - 40.0) < 0.5


def test_later_shapes_occlude_earlier_ones_and_hidden_ones_are_dropped():
    background = np.zeros((40, 40, 3), dtype=np.uint8)
    first = shapes.Shape(shapes.SQUARE, 15.0, 15.0, 16.0, 0.0, (255, 0, 0))
    hidden = shapes.Shape(shapes.CIRCLE, 30.0, 30.0, 4.0, 0.0, (0, 255, 0))
    second = shapes.Shape(shapes.SQUARE, 25.0, 25.0, 16.0, 0.0, (0, 0, 255))
    image, kept, masks = shapes.render_scene(background, [first, hidden, second])
    assert kept == [0, 2]
    first_full = shapes.shape_mask(first, 40, 40)
    second_full = shapes.shape_mask(second, 40, 40)
    np.testing.assert_array_equal(masks[0], first_full & ~second_full)
    np.testing.assert_array_equal(masks[1], second_full)
    assert masks[0].sum() == 16 * 16 - 6 * 6
    np.testing.assert_array_equal(image[masks[0]], np.tile([255, 0, 0], (masks[0].sum(), 1)))
    np.testing.assert_array_equal(image[masks[1]], np.tile([0, 0, 255], (masks[1].sum(), 1)))
    np.testing.assert_array_equal(image[~(first_full | second_full)], 0)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    annotation_file = shapes.write_shapes_dataset(root / "a", 12, seed=3, min_size=64, max_size=96)
    return root, annotation_file


def test_same_seed_gives_identical_files_and_images_do_not_depend_on_count(written):
    root, annotation_file = written
    again = shapes.write_shapes_dataset(root / "b", 12, seed=3, min_size=64, max_size=96)
    fewer = shapes.write_shapes_dataset(root / "c", 5, seed=3, min_size=64, max_size=96)
    other_seed = shapes.write_shapes_dataset(root / "d", 12, seed=4, min_size=64, max_size=96)
    assert again.read_bytes() == annotation_file.read_bytes()
    for image_id in range(1, 13):
        name = f"images/{image_id:06d}.png"
        assert (root / "b" / name).read_bytes() == (root / "a" / name).read_bytes()
    first_five = json.loads(annotation_file.read_text())
    five = json.loads(fewer.read_text())
    assert five["images"] == first_five["images"][:5]
    assert five["annotations"] == [a for a in first_five["annotations"] if a["image_id"] <= 5]
    assert other_seed.read_bytes() != annotation_file.read_bytes()


def test_written_dataset_masks_are_exact_and_read_back_through_pycocotools(written):
    root, annotation_file = written
    reference = COCO(str(annotation_file))
    source = coco.CocoSource(annotation_file, root / "a" / "images")
    assert len(source) == 12 and source.num_classes == 4 and sum(source.skipped.values()) == 0
    assert source.class_names == ("__background__", "square", "circle", "triangle")
    for index in range(len(source)):
        record = source[index]
        assert 64 <= record["image"].shape[0] <= 96 and 64 <= record["image"].shape[1] <= 96
        image, category_ids, masks = shapes.make_shapes_image(3, index, 64, 96, 6)
        np.testing.assert_array_equal(record["image"], image)
        np.testing.assert_array_equal(record["masks"], masks)
        np.testing.assert_array_equal([source.label_to_category_id[int(l)] for l in record["labels"]], category_ids)
        annotations = reference.loadAnns(reference.getAnnIds(imgIds=[record["image_id"]]))
        np.testing.assert_array_equal(record["masks"], np.stack([reference.annToMask(a) for a in annotations]))
        # Masks do not overlap, and every masked pixel has its shape's single colour.
        assert record["masks"].sum(axis=0).max() <= 1
        for mask in record["masks"].astype(bool):
            assert mask.any() and len(np.unique(record["image"][mask], axis=0)) == 1


def test_script_writes_dataset(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "make_shapes_dataset.py"), "--output", str(tmp_path),
         "--num_images", "3", "--seed", "1", "--image_size", "48"],
        capture_output=True, text=True, timeout=120, check=True)
    assert "wrote 3 images" in result.stdout
    dataset = json.loads((tmp_path / "annotations.json").read_text())
    assert [(i["height"], i["width"]) for i in dataset["images"]] == [(48, 48)] * 3
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == ["000001.png", "000002.png", "000003.png"]
