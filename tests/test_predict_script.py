"""A new user's walkthrough: save a torchvision state_dict, convert it, run scripts/predict.py on a real
photo, and compare the written PNG and COCO results JSON with torchvision's own outputs on that photo."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from conftest import shared_data_path
from maskrcnn_jax.data.image_io import load_image

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
from maskrcnn_jax.torchvision_reference import confident_random_torchvision_maskrcnn  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
MIN_SIZE, MAX_SIZE = 320, 512
SCORE_THRESHOLD = 0.8
PHOTO = "000000000074.jpg"


def run_script(*args: str) -> str:
    result = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def walkthrough(tmp_path_factory):
    photo = shared_data_path("coco_val2014_43", "images", PHOTO)
    work = tmp_path_factory.mktemp("walkthrough")
    reference = confident_random_torchvision_maskrcnn(seed=1, min_size=MIN_SIZE, max_size=MAX_SIZE)
    torch.save(reference.state_dict(), work / "model.pth")
    run_script("scripts/convert_torchvision.py", "--input", str(work / "model.pth"), "--output", str(work / "checkpoint"))
    run_script(
        "scripts/predict.py",
        "--config", "configs/mask_rcnn_r50_fpn_coco.py",
        "--checkpoint", str(work / "checkpoint"),
        "--images", str(photo),
        "--output", str(work / "predictions"),
        "--score-threshold", str(SCORE_THRESHOLD),
        "--set", "model.backbone.bn_eps=1e-5",
        "--set", f"input.min_size={MIN_SIZE}",
        "--set", f"input.max_size={MAX_SIZE}",
    )
    image = load_image(photo)
    with torch.no_grad():
        expected = reference([torch.from_numpy(image.copy()).permute(2, 0, 1).float() / 255])[0]
    keep = expected["scores"] >= SCORE_THRESHOLD
    expected = {key: value[keep].numpy() for key, value in expected.items()}
    results = json.loads((work / "predictions" / "detections.json").read_text())
    return {"image": image, "expected": expected, "results": results, "png": work / "predictions" / f"{pathlib.Path(PHOTO).stem}.png"}


def test_png_is_drawn_over_the_photo(walkthrough):
    picture = np.asarray(Image.open(walkthrough["png"]).convert("RGB"))
    assert picture.shape == walkthrough["image"].shape
    # Masks and boxes are drawn, so the picture differs from the photo, but the photo is still there.
    changed = np.abs(picture.astype(int) - walkthrough["image"].astype(int)).max(axis=-1) > 0
    assert 0.01 < changed.mean() < 0.99


def test_results_match_torchvision_boxes_classes_masks(walkthrough):
    expected, results = walkthrough["expected"], walkthrough["results"]
    assert len(expected["boxes"]) >= 5, "the reference must make confident detections for this test to mean anything"
    assert len(results) == len(expected["boxes"])
    assert {entry["image"] for entry in results} == {PHOTO}
    height, width = walkthrough["image"].shape[:2]
    boxes = np.asarray([[x, y, x + w, y + h] for x, y, w, h in (entry["bbox"] for entry in results)])
    for box, label, score, mask in zip(expected["boxes"], expected["labels"], expected["scores"], expected["masks"]):
        # Match by geometry, not rank: near-equal scores may come out in either order.
        top_left = np.maximum(boxes[:, :2], box[:2])
        bottom_right = np.minimum(boxes[:, 2:], box[2:])
        intersection = np.prod(np.clip(bottom_right - top_left, 0, None), axis=1)
        union = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1) + np.prod(box[2:] - box[:2]) - intersection
        same_class = np.asarray([entry["category_id"] == label for entry in results])
        iou = np.where(same_class, intersection / union, 0.0)
        entry = results[int(iou.argmax())]
        assert iou.max() >= 0.99
        assert abs(entry["score"] - score) < 1e-3
        assert entry["segmentation"]["size"] == [height, width]
        ours = mask_utils.decode(entry["segmentation"]).astype(bool)
        theirs = mask[0] > 0.5
        assert (ours & theirs).sum() / max((ours | theirs).sum(), 1) >= 0.98
