"""COCO source on real data against pycocotools, and its defined behaviour on bad input."""

import collections
import io
import json
import pickle

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from maskrcnn_jax.data import coco
from maskrcnn_jax.data import image_io
from maskrcnn_jax.data import validation
from tests.conftest import shared_data_path

REAL_DATASETS = {
    # name: (annotation file, image folder, how many images to load through source[i])
    "coco_train2017_85": ("coco_train2017_85/annotations.json", "coco_train2017_85/images", 85),
    "coco_val2014_43": ("coco_val2014_43/annotations.json", "coco_val2014_43/images", 43),
    "labelme_voc3": ("labelme_voc3/annotations.json", "labelme_voc3/images", 3),
    "balloon": ("balloon/annotations.json", "balloon/images", 5),  # 2048-pixel photos: a few suffice
}


def _quiet_coco(path) -> COCO:
    dataset = json.loads(path.read_text())
    reference = COCO()
    reference.dataset = dataset
    reference.createIndex()
    return reference


@pytest.fixture(scope="module", params=sorted(REAL_DATASETS))
def real_dataset(request):
    annotation_name, image_name, num_loaded = REAL_DATASETS[request.param]
    annotation_file = shared_data_path(annotation_name)
    image_dir = shared_data_path(image_name)
    source = coco.CocoSource(annotation_file, image_dir)
    return request.param, source, _quiet_coco(annotation_file), num_loaded


def test_instance_counts_agree_with_pycocotools(real_dataset):
    _, source, reference, _ = real_dataset
    assert len(source) == len(reference.getImgIds())
    assert sum(source.skipped.values()) == 0, source.skipped
    for entry in source.entries:
        expected = reference.loadAnns(reference.getAnnIds(imgIds=[entry.image_id], iscrowd=False))
        category_ids = [source.label_to_category_id[int(label)] for label in entry.labels]
        assert category_ids == [a["category_id"] for a in expected]
    assert source.num_crowd == len(reference.getAnnIds(iscrowd=True))


def test_records_agree_with_pycocotools_masks_and_decoded_images(real_dataset):
    _, source, reference, num_loaded = real_dataset
    for index in range(num_loaded):
        record = source[index]
        info = reference.imgs[record["image_id"]]
        height, width = info["height"], info["width"]
        with Image.open(source.image_dir / info["file_name"]) as raw:
            np.testing.assert_array_equal(record["image"], np.asarray(raw.convert("RGB")))
        annotations = reference.loadAnns(reference.getAnnIds(imgIds=[record["image_id"]], iscrowd=False))
        expected_masks = np.stack([reference.annToMask(a) for a in annotations]) if annotations else (
            np.zeros((0, height, width), np.uint8))
        assert record["image"].shape == (height, width, 3) and record["image"].dtype == np.uint8
        assert record["masks"].dtype == np.uint8 and record["boxes"].dtype == np.float32
        assert record["labels"].dtype == np.int32
        np.testing.assert_array_equal(record["masks"], expected_masks)
        for box, mask in zip(record["boxes"], record["masks"]):
            rows, columns = np.nonzero(mask)
            mask_box = [columns.min(), rows.min(), columns.max() + 1, rows.max() + 1]
            np.testing.assert_allclose(box, mask_box, atol=1.0)


def test_labelme_quirks_image_id_zero_and_background_category():
    source = coco.CocoSource(shared_data_path("labelme_voc3/annotations.json"),
                             shared_data_path("labelme_voc3/images"))
    raw = json.loads(shared_data_path("labelme_voc3/annotations.json").read_text())
    assert 0 in [e.image_id for e in source.entries]
    assert source[[e.image_id for e in source.entries].index(0)]["image_id"] == 0
    # 21 categories in the file, one is labelme's '_background_' (id 0): 20 classes + background.
    assert len(raw["categories"]) == 21 and source.num_classes == 21
    assert 0 not in source.label_to_category_id.values()
    assert source.class_names[0] == "__background__" and "_background_" not in source.class_names
    names = {c["id"]: c["name"] for c in raw["categories"]}
    for label, category_id in source.label_to_category_id.items():
        assert source.class_names[label] == names[category_id]


def _write_image(path, height, width, seed=0):
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=95)


def _square(x, y, side):
    return [[x, y, x + side, y, x + side, y + side, x, y + side]]


@pytest.fixture(scope="module")
def bad_input_dataset(tmp_path_factory):
    """A 64x48 dataset where every image and annotation but a few has one known problem."""
    root = tmp_path_factory.mktemp("bad_input")
    images = root / "images"
    images.mkdir()
    for name in ("good.jpg", "empty.jpg"):
        _write_image(images / name, 48, 64)
    _write_image(images / "wrong_size.jpg", 40, 64)
    _write_image(images / "truncated.jpg", 48, 64)
    data = (images / "truncated.jpg").read_bytes()
    (images / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (images / "not_an_image.jpg").write_text("this is text")
    image_names = ["good.jpg", "empty.jpg", "wrong_size.jpg", "truncated.jpg", "not_an_image.jpg", "missing.jpg"]
    dataset = {
        "images": [{"id": i, "file_name": n, "height": 48, "width": 64} for i, n in enumerate(image_names)],
        "categories": [{"id": 7, "name": "thing"}, {"id": 3, "name": "other"}],
        "annotations": [],
    }
    # Column-major runs: 7 pixels (rows 10..16) in columns 1 and 2.
    good_rle = {"size": [48, 64], "counts": [1 * 48 + 10, 7, 41, 7, 48 * 64 - 58 - 55]}
    compressed = mask_utils.encode(np.asfortranarray(np.pad(np.ones((3, 2), np.uint8), ((40, 5), (60, 2)))))
    annotations = [
        (0, 7, {"segmentation": _square(10, 10, 20), "bbox": [10, 10, 20, 20]}),  # kept
        (0, 3, {"segmentation": good_rle}),  # kept: uncompressed RLE, no bbox
        (0, 7, {"segmentation": _square(2, 2, 8) + [[1, 1, 3, 3]], "bbox": [2, 2, 8, 8]}),  # kept, 1 part dropped
        (0, 7, {"segmentation": _square(50, 30, 30)}),  # kept, clipped at the image's corner
        (0, 7, {"segmentation": {"size": [48, 64], "counts": compressed["counts"].decode()}}),  # kept
        (0, 7, {"segmentation": _square(1, 1, 5), "bbox": [1, 1, 0, 5]}),  # zero-area bbox
        (0, 7, {"segmentation": _square(1, 1, 5), "bbox": [6, 6, -5, -5]}),  # inverted bbox
        (0, 7, {"segmentation": [[1, 1, 9, 9]]}),  # 2-point polygon
        (0, 7, {"segmentation": _square(70, 50, 10)}),  # outside the image
        (0, 7, {"segmentation": [[0, 0, 1e9, 0, 0, 1e9]]}),  # far outside: would take minutes to rasterise
        (0, 7, {"segmentation": [[5, 5, 10, 5, 20, 5]]}),  # 3 collinear points: no pixel
        (0, 99, {"segmentation": _square(1, 1, 5)}),  # unknown category
        (42, 7, {"segmentation": _square(1, 1, 5)}),  # unknown image
        ([0], 7, {"segmentation": _square(1, 1, 5)}),  # image id of the wrong type
        (0, {"id": 7}, {"segmentation": _square(1, 1, 5)}),  # category id of the wrong type
        (0, 7, {"segmentation": good_rle, "iscrowd": 1}),  # crowd
        (0, 7, {}),  # no segmentation
        (0, 7, {"segmentation": {"size": [10, 10], "counts": [100]}}),  # RLE of the wrong size
        (0, 7, {"segmentation": {"size": [48, 64], "counts": [5, 3, 8]}}),  # runs do not cover the image
        (0, 7, {"segmentation": {"size": [48, 64], "counts": "zzzz"}}),  # compressed string cut off
        (0, 7, {"segmentation": {"size": 48, "counts": "PP"}}),  # size not [height, width]
        (0, 7, {"segmentation": [[1, 2, 3]]}),  # odd number of coordinates
        (2, 7, {"segmentation": _square(1, 1, 5)}),
        (3, 7, {"segmentation": _square(1, 1, 5)}),
        (4, 7, {"segmentation": _square(1, 1, 5)}),
        (5, 7, {"segmentation": _square(1, 1, 5)}),
    ]
    for annotation_id, (image_id, category_id, fields) in enumerate(annotations, start=1):
        dataset["annotations"].append({"id": annotation_id, "image_id": image_id, "category_id": category_id,
                                       "iscrowd": 0, **fields})
    (root / "annotations.json").write_text(json.dumps(dataset))
    return root


def test_bad_annotations_are_skipped_and_counted_per_reason(bad_input_dataset):
    source = coco.CocoSource(bad_input_dataset / "annotations.json", bad_input_dataset / "images")
    assert source.skipped == collections.Counter({
        "invalid_box": 2, "polygon_fewer_than_3_points": 1, "polygon_part_dropped": 1, "outside_image": 1,
        "coordinates_far_outside_image": 1,
        "empty_mask": 1, "unknown_category_id": 2, "unknown_image_id": 2, "missing_segmentation": 1,
        "malformed_segmentation": 5})
    assert set(source.skipped) <= set(validation.SKIP_REASONS)
    assert source.num_crowd == 1
    assert source.num_images_without_annotations == 1
    record = source[0]
    # Labels are contiguous in category-id order: id 3 -> 1, id 7 -> 2.
    assert source.label_to_category_id == {1: 3, 2: 7} and source.class_names == ("__background__", "other", "thing")
    np.testing.assert_array_equal(record["labels"], [2, 1, 2, 2, 2])
    # Hand-computed boxes: pycocotools rasterises a square polygon [x, x+side] to pixels x..x+side-1.
    np.testing.assert_allclose(record["boxes"], [[10, 10, 30, 30], [1, 10, 3, 17], [2, 2, 10, 10], [50, 30, 64, 48],
                                                 [60, 40, 62, 43]])
    assert record["masks"].shape == (5, 48, 64)
    assert record["masks"][4].sum() == 6 and record["masks"][4, 40:43, 60:62].all()
    assert record["masks"][3].sum() == 14 * 18  # clipped at the image border
    assert record["masks"][1].sum() == 14


def test_broken_images_raise_an_error_naming_the_file(bad_input_dataset):
    source = coco.CocoSource(bad_input_dataset / "annotations.json", bad_input_dataset / "images")
    expected = {"wrong_size.jpg": "40x64", "truncated.jpg": "cannot decode", "not_an_image.jpg": "cannot decode",
                "missing.jpg": "cannot read"}
    for index, entry in enumerate(source.entries):
        if entry.file_name not in expected:
            continue
        with pytest.raises(image_io.BrokenImageError) as error:
            source[index]
        assert error.value.path.endswith(entry.file_name)
        assert expected[entry.file_name] in error.value.reason


def test_images_without_annotations_are_kept_or_skipped(bad_input_dataset):
    kept = coco.CocoSource(bad_input_dataset / "annotations.json", bad_input_dataset / "images")
    skipped = coco.CocoSource(bad_input_dataset / "annotations.json", bad_input_dataset / "images",
                              skip_images_without_annotations=True)
    assert len(kept) == 6 and len(skipped) == 5
    empty = kept[[e.file_name for e in kept.entries].index("empty.jpg")]
    assert empty["boxes"].shape == (0, 4) and empty["labels"].shape == (0,) and empty["masks"].shape == (0, 48, 64)
    assert "empty.jpg" not in [e.file_name for e in skipped.entries]


def test_source_pickles_for_worker_processes(bad_input_dataset):
    source = coco.CocoSource(bad_input_dataset / "annotations.json", bad_input_dataset / "images")
    copy = pickle.loads(pickle.dumps(source))
    assert len(copy) == len(source)
    for key, value in source[0].items():
        np.testing.assert_array_equal(copy[0][key], value)


@pytest.mark.parametrize("content, problem", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "top level is a JSON list"),
    ('{"images": [], "annotations": []}', "missing key(s) ['categories']"),
    ('{"images": {}, "annotations": [], "categories": []}', "'images' is a dict"),
    ('{"images": [{"id": 1, "file_name": "a.jpg", "height": 4, "width": 4}, '
     '{"id": 1, "file_name": "b.jpg", "height": 4, "width": 4}], "annotations": [], "categories": []}',
     "image id 1 appears more than once"),
    ('{"images": [{"id": 1, "file_name": "a.jpg", "width": 4}], "annotations": [], "categories": []}',
     "no positive integer 'height'"),
    ('{"images": [], "annotations": [], "categories": [{"id": 1}]}', "has no 'name'"),
])
def test_broken_annotation_file_fails_at_once_naming_file_and_problem(tmp_path, content, problem):
    path = tmp_path / "annotations.json"
    path.write_text(content)
    with pytest.raises(validation.DatasetFileError) as error:
        coco.CocoSource(path, tmp_path)
    assert str(path) in str(error.value) and problem in str(error.value)


def test_missing_annotation_file_fails_naming_it(tmp_path):
    with pytest.raises(validation.DatasetFileError, match="file not found"):
        coco.CocoSource(tmp_path / "nowhere.json", tmp_path)


def _encode(image: Image.Image, format_name: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format_name, **options)
    return buffer.getvalue()


def test_decode_applies_exif_orientation():
    pixels = np.random.default_rng(1).integers(0, 256, (6, 10, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[274] = 6  # "rotate 90 CW to display"
    data = _encode(Image.fromarray(pixels), "PNG", exif=exif)
    decoded = image_io.decode_image(data)
    # Orientation 6 shows the stored image turned 90 degrees clockwise.
    np.testing.assert_array_equal(decoded, np.rot90(pixels, k=-1))


def test_decode_converts_gray_rgba_and_palette_to_rgb():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    np.testing.assert_array_equal(image_io.decode_image(_encode(Image.fromarray(gray), "PNG")),
                                  np.repeat(gray[..., None], 3, axis=2))
    deep_gray = np.array([[0, 257, 40000], [65535, 1000, 30000]], dtype=np.uint16)
    np.testing.assert_array_equal(image_io.decode_image(_encode(Image.fromarray(deep_gray), "PNG")),
                                  np.repeat((deep_gray // 256).astype(np.uint8)[..., None], 3, axis=2))
    rgba = np.random.default_rng(2).integers(0, 256, (3, 4, 4), dtype=np.uint8)
    np.testing.assert_array_equal(image_io.decode_image(_encode(Image.fromarray(rgba, "RGBA"), "PNG")), rgba[..., :3])
    palette_image = Image.fromarray(np.array([[0, 1], [1, 2]], dtype=np.uint8), "P")
    palette_image.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255])
    np.testing.assert_array_equal(image_io.decode_image(_encode(palette_image, "PNG")),
                                  [[[255, 0, 0], [0, 255, 0]], [[0, 255, 0], [0, 0, 255]]])


def test_exif_rotated_image_is_used_as_shown_and_sizes_are_checked_against_the_file(tmp_path):
    pixels = np.random.default_rng(3).integers(0, 256, (6, 10, 3), dtype=np.uint8)  # stored 6 high, 10 wide
    exif = Image.Exif()
    exif[274] = 6  # shown turned 90 degrees clockwise: 10 high, 6 wide
    Image.fromarray(pixels).save(tmp_path / "rotated.png", exif=exif)
    assert image_io.image_size(tmp_path / "rotated.png") == (10, 6)
    dataset = {
        "images": [{"id": 1, "file_name": "rotated.png", "height": 10, "width": 6},
                   {"id": 2, "file_name": "rotated.png", "height": 6, "width": 10}],
        "categories": [{"id": 1, "name": "thing"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "segmentation": _square(1, 2, 4)}],
    }
    (tmp_path / "annotations.json").write_text(json.dumps(dataset))
    source = coco.CocoSource(tmp_path / "annotations.json", tmp_path)
    record = source[0]
    np.testing.assert_array_equal(record["image"], np.rot90(pixels, k=-1))
    assert record["masks"].shape == (1, 10, 6)
    np.testing.assert_allclose(record["boxes"], [[1, 2, 5, 6]])
    with pytest.raises(image_io.BrokenImageError, match="image is 10x6 .* says 6x10"):
        source[1]
