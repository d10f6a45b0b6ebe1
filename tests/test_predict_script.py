"""A new user's walkthrough: save a torchvision state_dict, convert it, and predict with nothing but
`--checkpoint` (scripts/predict.py) and with `Detector.from_checkpoint(dir).detect(images)`; both
must give torchvision's own detections on real photos, but for those of its 10 "N/A" slots (ids COCO
never uses), which ours never make; and evaluate.py scores predict.py's detections.json against COCO's
annotations. And a 5-class model's class names reach the written detections.

The torchvision model is built with min_size 320 / max_size 512 (small for CI); the conversion is
told so (`--config.input.*`), as it is told any other property of the model, and the checkpoint
carries it from then on.
"""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from conftest import shared_data_path
from detection_matching import allowed_differences
from maskrcnn_jax import Detector
from maskrcnn_jax.checkpoint import load_config, save_checkpoint
from maskrcnn_jax.command_line import load_config_file
from maskrcnn_jax.data.image_io import load_image
from maskrcnn_jax.detector.coco_classes import COCO_CLASS_NAMES
from maskrcnn_jax.models import build_model
from random_params import random_params

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
from torchvision_reference import confident_random_torchvision_maskrcnn  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
MIN_SIZE, MAX_SIZE = 320, 512
SCORE_THRESHOLD = 0.5  # the default of predict.py and Detector
# Two landscape photos that share one padded size (320x480): one compile serves both.
PHOTOS = ("000000000074.jpg", "000000000294.jpg")


def run_script(*args: str) -> str:
    result = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The converted checkpoint, the photos and torchvision's detections on them (score >= SCORE_THRESHOLD)."""
    paths = [shared_data_path("coco_val2014_43", "images", name) for name in PHOTOS]
    work = tmp_path_factory.mktemp("walkthrough")
    reference = confident_random_torchvision_maskrcnn(seed=0, min_size=MIN_SIZE, max_size=MAX_SIZE)
    torch.save(reference.state_dict(), work / "model.pth")
    printed = run_script(
        "scripts/convert_torchvision.py", "--input", str(work / "model.pth"), "--output", str(work / "checkpoint"),
        f"--config.input.min_size={MIN_SIZE}", f"--config.input.max_size={MAX_SIZE}",
    )
    images = [load_image(path) for path in paths]
    # torchvision scores its "N/A" slots like any other (random weights make confident detections
    # of them); ours never detect a slot without a class name, so those are left out of the
    # comparison: torchvision keeps its top 200 detections (not 100), drops the N/A ones and then
    # takes the top 100. That is what ours must give: per-class NMS never lets one class suppress
    # another, so only the top-100 cut sees the N/A detections (asserted: 100 named ones among the 200).
    detections_per_image = reference.roi_heads.detections_per_img
    reference.roi_heads.detections_per_img = 2 * detections_per_image
    unnamed = np.array([label for label, name in enumerate(COCO_CLASS_NAMES) if name == "N/A"])
    expected, unnamed_found = [], 0
    with torch.no_grad():
        for image in images:
            output = reference([torch.from_numpy(image.copy()).permute(2, 0, 1).float() / 255])[0]
            named = ~np.isin(output["labels"].numpy(), unnamed)
            assert named.sum() >= detections_per_image or len(named) < 2 * detections_per_image
            unnamed_found += int((~named[:detections_per_image]).sum())
            keep = np.flatnonzero(named)[:detections_per_image]
            keep = keep[output["scores"].numpy()[keep] >= SCORE_THRESHOLD]
            expected.append({key: value[keep].numpy() for key, value in output.items()})
    return {"checkpoint": work / "checkpoint", "paths": paths, "images": images, "expected": expected,
            "printed": printed, "work": work, "unnamed_found": unnamed_found}


@pytest.fixture(scope="module")
def script_results(converted):
    output = converted["work"] / "predictions"
    run_script("scripts/predict.py", "--checkpoint", str(converted["checkpoint"]), "--output", str(output),
               *map(str, converted["paths"]))
    return json.loads((output / "detections.json").read_text()), output


def mask_iou(ours: np.ndarray, theirs: np.ndarray) -> float:
    return (ours & theirs).sum() / max((ours | theirs).sum(), 1)


def assert_same_detections(expected: dict, boxes, classes, scores, masks) -> None:
    """torchvision's detections of one image against ours: all found (same class, box IoU >= 0.99;
    matched by geometry, not rank: near-equal scores may come out in either order) but for a few
    near-ties (detection_matching.allowed_differences: a score that ties the 0.5 threshold within
    float32 rounding, or an IoU that ties NMS's, may go either way on another CPU kind), scores
    within 1e-3, mean mask IoU >= 0.98."""
    assert len(expected["boxes"]) >= 20, "the reference must make confident detections for this test to mean anything"
    allowed = allowed_differences(len(expected["boxes"]))
    assert abs(len(boxes) - len(expected["boxes"])) <= allowed
    top_left = np.maximum(boxes[None, :, :2], expected["boxes"][:, None, :2])
    bottom_right = np.minimum(boxes[None, :, 2:], expected["boxes"][:, None, 2:])
    intersection = np.prod(np.clip(bottom_right - top_left, 0, None), axis=-1)
    area = np.prod(boxes[:, 2:] - boxes[:, :2], axis=-1)
    expected_area = np.prod(expected["boxes"][:, 2:] - expected["boxes"][:, :2], axis=-1)
    iou = intersection / (area[None, :] + expected_area[:, None] - intersection)
    iou[expected["labels"][:, None] != np.asarray(classes)[None, :]] = 0
    best = iou.argmax(axis=1)
    found = iou[np.arange(len(best)), best] >= 0.99
    print(f"{len(boxes)} detections vs torchvision's {len(expected['boxes'])}, {(~found).sum()} of theirs unmatched "
          f"(allowed {allowed})")
    assert (~found).sum() <= allowed, found.mean()
    np.testing.assert_allclose(np.asarray(scores)[best[found]], expected["scores"][found], atol=1e-3)
    ious = [mask_iou(masks[j], expected["masks"][i, 0] > 0.5) for i, j in zip(np.flatnonzero(found), best[found])]
    assert np.mean(ious) >= 0.98, np.mean(ious)


def test_converter_records_the_batchnorm_eps_and_architecture_and_says_why(converted):
    assert "bn_eps = 1e-05 (BatchNorm2d buffers" in converted["printed"]
    assert "architecture = v1 (roi_heads.box_head.fc6.weight present: TwoMLPHead" in converted["printed"]
    config = load_config(converted["checkpoint"])
    assert config.model.backbone.bn_eps == 1e-5 and config.input.min_size == MIN_SIZE
    assert config.model.architecture == "v1"


def test_png_is_drawn_over_the_photo(converted, script_results):
    _, output = script_results
    for path, image in zip(converted["paths"], converted["images"]):
        picture = np.asarray(Image.open(output / f"{path.name}.png").convert("RGB"))
        assert picture.shape == image.shape
        # Masks and boxes are drawn, so the picture differs from the photo, but the photo is still there.
        changed = np.abs(picture.astype(int) - image.astype(int)).max(axis=-1) > 0
        assert 0.01 < changed.mean() < 0.99


def test_predict_script_with_only_the_checkpoint_gives_torchvisions_detections(converted, script_results):
    results, _ = script_results
    assert {entry["file_name"] for entry in results} == set(PHOTOS)
    for image_id, (name, image, expected) in enumerate(zip(PHOTOS, converted["images"], converted["expected"]), 1):
        entries = [entry for entry in results if entry["file_name"] == name]
        assert {entry["image_id"] for entry in entries} == {image_id}
        assert all(entry["segmentation"]["size"] == list(image.shape[:2]) for entry in entries)
        assert all(entry["class_name"] == COCO_CLASS_NAMES[entry["category_id"]] for entry in entries)
        boxes = np.asarray([[x, y, x + w, y + h] for x, y, w, h in (entry["bbox"] for entry in entries)])
        masks = np.stack([mask_utils.decode(entry["segmentation"]).astype(bool) for entry in entries])
        assert_same_detections(expected, boxes, [e["category_id"] for e in entries], [e["score"] for e in entries], masks)


def test_evaluate_script_scores_the_predict_scripts_detections_on_coco(converted, script_results):
    """Without the "N/A" slots, every category id predict.py writes is one COCO's annotations know,
    so evaluate.py accepts its detections.json (it refused ids 29, 45, 71 before)."""
    assert converted["unnamed_found"] > 0, "torchvision must detect N/A slots here for this test to mean anything"
    results, output = script_results
    assert all(COCO_CLASS_NAMES[entry["category_id"]] != "N/A" for entry in results)
    annotations = shared_data_path("coco_val2014_43", "annotations.json")
    printed = run_script("scripts/evaluate.py", "--annotations", str(annotations),
                         "--results", str(output / "detections.json"), "--output", str(converted["work"] / "scores"))
    metrics = json.loads((converted["work"] / "scores" / "metrics.json").read_text())
    assert set(metrics) == {"bbox", "segm"} and "IoU metric: segm" in printed
    assert all(-1.0 <= value <= 1.0 for scores in metrics.values() for value in scores.values())


def test_detector_from_checkpoint_gives_torchvisions_detections(converted):
    detector = Detector.from_checkpoint(converted["checkpoint"])
    detections = detector.detect(converted["images"])
    for image, expected, found in zip(converted["images"], converted["expected"], detections):
        assert found["masks"].shape == (len(found["boxes"]), *image.shape[:2]) and found["masks"].dtype == bool
        assert found["class_names"] == [COCO_CLASS_NAMES[label] for label in found["classes"]]
        assert_same_detections(expected, found["boxes"], found["classes"], found["scores"], found["masks"])
    assert detector._predict._cache_size() == 1  # one padded size, one compile
    picture = detector.draw(converted["images"][0], detections[0])
    assert picture.size == converted["images"][0].shape[1::-1]


def test_predict_script_names_a_5_class_models_classes(tmp_path):
    photo = shared_data_path("coco_val2014_43", "images", PHOTOS[0])
    config = load_config_file(ROOT / "configs" / "mask_rcnn_tiny.py")
    class_names = ("__background__", "circle", "square", "triangle", "star")
    save_checkpoint(tmp_path / "checkpoint", random_params(build_model(config)), config, class_names)
    # --config.* overrides apply to the checkpoint's own config.
    run_script("scripts/predict.py", "--checkpoint", str(tmp_path / "checkpoint"), "--output", str(tmp_path / "out"),
               "--score_threshold=0", "--config.test.score_threshold=0.0", "--config.test.detections_per_image=3",
               str(photo))
    results = json.loads((tmp_path / "out" / "detections.json").read_text())
    assert len(results) == 3
    for entry in results:
        assert 1 <= entry["category_id"] <= 4
        assert entry["class_name"] == class_names[entry["category_id"]]
