"""Host transforms against torch / torchvision, hand-computed values and direct mask rasterisation."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes

from maskrcnn_jax.data import transforms

from conftest import shared_data_path


def ellipse_record(height, width, ellipses, image_id=7, seed=0):
    """A host record with one ellipse mask per (cy, cx, ry, rx) and its tight box."""
    rows, cols = np.mgrid[:height, :width] + 0.5
    masks = np.stack([((rows - cy) / ry) ** 2 + ((cols - cx) / rx) ** 2 <= 1 for cy, cx, ry, rx in ellipses])
    masks = masks.astype(np.uint8).reshape(len(ellipses), height, width)
    boxes = np.array([[np.nonzero(m.any(0))[0].min(), np.nonzero(m.any(1))[0].min(),
                       np.nonzero(m.any(0))[0].max() + 1, np.nonzero(m.any(1))[0].max() + 1] for m in masks],
                     np.float32).reshape(-1, 4)
    image = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return {"image_id": image_id, "file_name": "x.png", "image": image, "boxes": boxes,
            "labels": np.arange(1, len(ellipses) + 1, dtype=np.int32), "masks": masks}


def torch_resize(array_hwc, height, width):
    tensor = torch.from_numpy(np.ascontiguousarray(array_hwc, np.float32)).permute(2, 0, 1)[None]
    return F.interpolate(tensor, size=(height, width), mode="bilinear", align_corners=False,
                         antialias=False)[0].permute(1, 2, 0).numpy()


def paste_crops(crops, boxes, height, width):
    """Nearest-neighbour paste of [N, Sm, Sm] box crops into [N, height, width] (pixel centres)."""
    size = crops.shape[-1]
    pasted = np.zeros((len(crops), height, width), np.uint8)
    centres_y, centres_x = np.arange(height) + 0.5, np.arange(width) + 0.5
    for index, (crop, (x1, y1, x2, y2)) in enumerate(zip(crops, boxes)):
        ys = np.floor((centres_y - y1) / (y2 - y1) * size).astype(int)
        xs = np.floor((centres_x - x1) / (x2 - x1) * size).astype(int)
        inside = (ys >= 0) & (ys < size)
        inside_x = (xs >= 0) & (xs < size)
        pasted[index][np.ix_(inside, inside_x)] = crop[np.ix_(ys[inside], xs[inside_x])]
    return pasted


def iou(a, b):
    return np.logical_and(a, b).sum() / max(np.logical_or(a, b).sum(), 1)


def tight_box(mask):
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


@pytest.mark.parametrize("in_shape,out_shape", [((480, 640), (800, 1066)), ((333, 500), (800, 1201)),
                                                ((97, 61), (33, 20)), ((5, 7), (23, 29))])
def test_resize_image_matches_torch_interpolate(in_shape, out_shape):
    image = np.random.default_rng(1).uniform(0, 1, (*in_shape, 3)).astype(np.float32)
    ours = transforms.resize_image(image, *out_shape)
    np.testing.assert_allclose(ours, torch_resize(image, *out_shape), atol=1e-5, rtol=0)


def test_resize_image_window_is_a_crop_of_the_full_resize():
    image = np.random.default_rng(2).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    full = transforms.resize_image(image, 120, 150)
    window = transforms.resize_image_window(image, 120, 150, 13, 40, 64, 96)
    np.testing.assert_array_equal(window, full[13:77, 40:136])


@pytest.mark.parametrize("shape", [(480, 640), (427, 640), (640, 480), (333, 500), (3, 3000), (500, 500), (17, 31)])
def test_resized_shape_matches_torchvision(shape):
    transform = GeneralizedRCNNTransform(800, 1333, [0.0] * 3, [1.0] * 3).eval()
    images, _ = transform([torch.zeros(3, *shape)])
    assert transforms.resized_shape(*shape, 800, 1333) == tuple(images.image_sizes[0])


def test_normalize_image_hand_computed():
    image = np.array([[[0, 128, 255]]], np.uint8)
    expected = [(0 - 0.485) / 0.229, (128 / 255 - 0.456) / 0.224, (1 - 0.406) / 0.225]
    np.testing.assert_allclose(transforms.normalize_image(image)[0, 0], expected, rtol=1e-6)


def test_pad_image_zero_pads_bottom_right():
    image = np.ones((2, 3, 3), np.float32)
    padded = transforms.pad_image(image, 4, 5)
    assert padded.shape == (4, 5, 3) and padded.sum() == 18 and padded[:2, :3].min() == 1
    with pytest.raises(ValueError):
        transforms.pad_image(image, 1, 5)


def check_torchvision_preprocessing(image_uint8):
    transform = GeneralizedRCNNTransform(800, 1333, list(transforms.IMAGENET_MEAN),
                                         list(transforms.IMAGENET_STD)).eval()
    images, _ = transform([torch.from_numpy(np.array(image_uint8)).permute(2, 0, 1).float() / 255])
    expected = images.tensors[0].permute(1, 2, 0).numpy()
    height, width = image_uint8.shape[:2]
    geometry = transforms.evaluation_geometry(height, width, canvas_size=expected.shape[:2],
                                              min_size=800, max_size=1333)
    assert (geometry.height, geometry.width) == tuple(images.image_sizes[0])
    # torchvision pads each side up to a multiple of 32 and no more.
    assert expected.shape[:2] == (-(-geometry.height // 32) * 32, -(-geometry.width // 32) * 32)
    ours = transforms.transform_image(image_uint8, geometry, expected.shape[:2], np.float32)
    np.testing.assert_allclose(ours, expected, atol=1e-5, rtol=0)
    # Training's uint8 example is torchvision's resized photo (its normalisation undone) rounded to
    # bytes, zero in the padding; the device normalises it (detector.inputs).
    ours = transforms.transform_image(image_uint8, geometry, expected.shape[:2])
    assert ours.dtype == np.uint8
    pixels = (expected * np.asarray(transforms.IMAGENET_STD) + np.asarray(transforms.IMAGENET_MEAN)) * 255
    inside = (slice(0, geometry.height), slice(0, geometry.width))
    np.testing.assert_allclose(ours[inside], pixels[inside], atol=0.5 + 1e-3, rtol=0)
    assert not ours[geometry.height:].any() and not ours[:, geometry.width:].any()


def test_preprocessing_matches_torchvision_transform_synthetic():
    check_torchvision_preprocessing(np.random.default_rng(3).integers(0, 256, (61, 97, 3), dtype=np.uint8))


def test_preprocessing_matches_torchvision_transform_on_a_coco_photo():
    from PIL import Image
    path = shared_data_path("coco_train2017_85", "images", "000000000009.jpg")
    check_torchvision_preprocessing(np.asarray(Image.open(path).convert("RGB")))


def test_boxes_match_torchvision_resize_boxes_and_flip_round_trips():
    boxes = np.array([[3.5, 4.0, 50.25, 60.0], [0.0, 0.0, 97.0, 61.0]], np.float32)
    geometry = transforms.evaluation_geometry(61, 97, canvas_size=(1344, 1344), min_size=800, max_size=1333)
    expected = resize_boxes(torch.from_numpy(boxes), (61, 97), (geometry.height, geometry.width)).numpy()
    resized = transforms.transform_boxes(boxes, geometry)
    np.testing.assert_allclose(resized, expected, rtol=1e-6)
    flipped_geometry = geometry.replace(flip=True)
    flipped = transforms.transform_boxes(boxes, flipped_geometry)
    np.testing.assert_allclose(flipped[:, [2, 1, 0, 3]] * [-1, 1, -1, 1] + [geometry.width, 0, geometry.width, 0],
                               resized, rtol=0, atol=1e-4)
    np.testing.assert_allclose(transforms.unflipped_boxes_in_original(flipped, flipped_geometry), boxes,
                               rtol=1e-5, atol=1e-4)


def test_uncropped_example_keeps_annotation_boxes_as_torchvision_resizes_them():
    record = ellipse_record(61, 97, [(30, 40, 12, 20), (30, 80, 20, 30)])
    record["boxes"] = np.array([[19.5, 17.25, 60.0, 43.0], [49.0, 9.5, 97.0, 61.0]], np.float32)
    geometry = transforms.evaluation_geometry(61, 97, canvas_size=(1344, 1344), min_size=800, max_size=1333)
    example = transforms.transform_example(record, geometry, canvas_size=(1344, 1344), max_instances=3)
    expected = resize_boxes(torch.from_numpy(record["boxes"]), (61, 97), (geometry.height, geometry.width))
    np.testing.assert_allclose(example["gt_boxes"][:2], expected.numpy(), rtol=0, atol=1e-4)


def test_flip_twice_restores_the_image():
    record = ellipse_record(40, 50, [(20, 20, 8, 12)])
    geometry = transforms.evaluation_geometry(40, 50, canvas_size=(64, 64), min_size=40, max_size=50)
    flipped = transforms.transform_image(record["image"], geometry.replace(flip=True),
                                         (40, 50))
    plain = transforms.transform_image(record["image"], geometry, (40, 50))
    np.testing.assert_array_equal(flipped[:, ::-1], plain)


def directly_rasterised_masks(record, geometry):
    """The full masks resized with torch, cropped to the window, flipped, thresholded: [N, h, w] bool."""
    resized = torch_resize(np.moveaxis(record["masks"], 0, -1).astype(np.float32),
                           geometry.resized_height, geometry.resized_width)
    window = resized[geometry.top:geometry.top + geometry.height, geometry.left:geometry.left + geometry.width]
    direct = np.moveaxis(window, -1, 0) >= 0.5
    return direct[:, :, ::-1] if geometry.flip else direct


def check_masks_against_direct_rasterisation(record, geometry, example, instances, min_iou, box_tolerance):
    """Pasted crops vs direct rasterisation; `instances` maps example slots to record indices."""
    direct = directly_rasterised_masks(record, geometry)
    slots = list(instances)
    boxes = example["gt_boxes"][slots]
    pasted = paste_crops(example["gt_masks"][slots], boxes, geometry.height, geometry.width)
    for position, slot in enumerate(slots):
        reference = direct[instances[slot]]
        assert iou(pasted[position], reference) >= min_iou, (slot, iou(pasted[position], reference))
        np.testing.assert_allclose(tight_box(reference), boxes[position], atol=box_tolerance)


@pytest.mark.parametrize("flip", [False, True])
def test_example_masks_and_boxes_agree_with_direct_rasterisation(flip):
    record = ellipse_record(90, 120, [(30, 40, 15, 25), (60, 90, 20, 12), (45, 60, 40, 55)])
    geometry = transforms.evaluation_geometry(90, 120, canvas_size=(256, 256), min_size=150, max_size=250)
    geometry = geometry.replace(flip=flip)
    example = transforms.transform_example(record, geometry, canvas_size=(256, 256), max_instances=5)
    assert example["gt_masks"].shape == (5, 112, 112) and example["gt_valid"].tolist() == [1, 1, 1, 0, 0]
    # Labels are 1..N in record order, so slot i holds record instance label - 1.
    instances = {i: int(example["gt_classes"][i]) - 1 for i in range(3)}
    check_masks_against_direct_rasterisation(record, geometry, example, instances, min_iou=0.95, box_tolerance=2.0)


def test_large_scale_jitter_crop_keeps_masks_and_boxes_consistent():
    record = ellipse_record(90, 120, [(30, 40, 15, 25), (60, 90, 20, 12), (45, 60, 40, 55)])
    rng = np.random.default_rng(5)
    for _ in range(3):
        geometry = transforms.training_geometry(rng, 90, 120, canvas_size=(128, 128), min_size=0, max_size=0,
                                                jitter_range=(1.5, 2.0), large_scale_jitter=True,
                                                flip_probability=0.5)
        assert (geometry.height, geometry.width) == (128, 128)  # upscaled past the canvas: cropped
        example = transforms.transform_example(record, geometry, canvas_size=(128, 128), max_instances=5)
        np.testing.assert_array_equal(
            example["image"], transforms.transform_image(record["image"], geometry, (128, 128)))
        # A crop clips boxes: compare instances still at least 8 px on each side.
        sides = np.minimum(example["gt_boxes"][:, 2] - example["gt_boxes"][:, 0],
                           example["gt_boxes"][:, 3] - example["gt_boxes"][:, 1])
        instances = {i: int(example["gt_classes"][i]) - 1 for i in np.flatnonzero(example["gt_valid"] & (sides >= 8))}
        check_masks_against_direct_rasterisation(record, geometry, example, instances, min_iou=0.9, box_tolerance=2.5)


def test_overflow_keeps_the_largest_and_degenerate_boxes_are_dropped_and_counted():
    record = ellipse_record(100, 100, [(20, 20, 3, 3), (50, 50, 30, 30), (80, 80, 8, 8), (20, 70, 12, 12)])
    record["boxes"] = np.concatenate([record["boxes"], [[10, 10, 10.2, 30]]]).astype(np.float32)
    record["labels"] = np.arange(1, 6, dtype=np.int32)
    record["masks"] = np.concatenate([record["masks"], np.zeros((1, 100, 100), np.uint8)])
    geometry = transforms.evaluation_geometry(100, 100, canvas_size=(128, 128), min_size=100, max_size=100)
    example = transforms.transform_example(record, geometry, canvas_size=(128, 128), max_instances=2)
    assert example["dropped_degenerate"] == 1 and example["dropped_overflow"] == 2
    assert example["gt_classes"].tolist() == [2, 4] and example["gt_valid"].tolist() == [True, True]


def test_crop_masks_to_boxes_samples_inside_the_box():
    masks = np.zeros((1, 20, 20), np.uint8)
    masks[0, 5:15, 4:8] = 1  # left half of the box [4, 5, 12, 15] is inside the mask
    crop = transforms.crop_masks_to_boxes(masks, np.array([[4, 5, 12, 15]], np.float32), 8)
    expected = np.zeros((8, 8), np.uint8)
    expected[:, :4] = 1
    np.testing.assert_array_equal(crop[0], expected)


@pytest.mark.parametrize("dataset,large_scale_jitter", [("coco_train2017_85", False), ("coco_train2017_85", True),
                                                        ("labelme_voc3", False)])
def test_real_records_masks_and_boxes_after_training_transforms(dataset, large_scale_jitter):
    from maskrcnn_jax.data.coco import CocoSource
    directory = shared_data_path(dataset)
    source = CocoSource(directory / "annotations.json", directory / "images")
    rng = np.random.default_rng(0)
    checked = cropped = 0
    for index in range(0, len(source), max(1, len(source) // 12)):
        record = source[index]
        height, width = record["image"].shape[:2]
        geometry = transforms.training_geometry(
            rng, height, width, canvas_size=(512, 512), min_size=400, max_size=512, flip_probability=0.5,
            jitter_range=(0.1, 2.0) if large_scale_jitter else (0.8, 1.2), large_scale_jitter=large_scale_jitter)
        example = transforms.transform_example(record, geometry, canvas_size=(512, 512), max_instances=100)
        assert example["gt_valid"].sum() + example["dropped_degenerate"] == len(record["boxes"])
        if example["dropped_degenerate"]:
            continue
        # No drops: slot i is record instance i. Compare instances at least 24 px on each side; COCO
        # boxes come from polygons and masks are their rasterisation, so boxes agree to ~2 px.
        sides = np.minimum(example["gt_boxes"][:, 2] - example["gt_boxes"][:, 0],
                           example["gt_boxes"][:, 3] - example["gt_boxes"][:, 1])
        instances = {i: i for i in np.flatnonzero(example["gt_valid"] & (sides >= 24))}
        check_masks_against_direct_rasterisation(record, geometry, example, instances, min_iou=0.85,
                                                 box_tolerance=2.5)
        checked += len(instances)
        cropped += geometry.height < geometry.resized_height or geometry.width < geometry.resized_width
    assert checked >= 5 and (cropped > 0 or dataset == "labelme_voc3"), (checked, cropped)
