"""`maskrcnn_jax.Detector` on a tiny random model: config overrides, the score threshold, masks of
the kept detections against torchvision's paste of the same predictions, and compiles per padded size.
(Parity with torchvision on a converted R50 is in test_predict_script.py.)"""

import pathlib

import jax
import numpy as np
import pytest
from PIL import Image

from maskrcnn_jax import Detector
from maskrcnn_jax.checkpoint import save_checkpoint
from maskrcnn_jax.command_line import load_config_file
from maskrcnn_jax.inference.predictor import make_predictor
from maskrcnn_jax.models import build_model
from random_params import random_params

torch = pytest.importorskip("torch")
roi_heads = pytest.importorskip("torchvision.models.detection.roi_heads")

ROOT = pathlib.Path(__file__).resolve().parents[1]
CLASS_NAMES = ("__background__", "circle", "square", "triangle", "star")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    config = load_config_file(ROOT / "configs" / "mask_rcnn_tiny.py")
    config.test.score_threshold = 0.0  # random weights: keep every detection the model makes
    directory = tmp_path_factory.mktemp("tiny") / "checkpoint"
    save_checkpoint(directory, random_params(build_model(config)), config, CLASS_NAMES)
    return directory


@pytest.fixture(scope="module")
def detector(checkpoint):
    return Detector.from_checkpoint(checkpoint, score_threshold=0.0, **{"test.detections_per_image": 7})


def photo(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def test_detections_and_masks_equal_the_predictions_pasted_by_torchvision(detector):
    assert detector.spec.detections_per_image == 7  # the override
    image = photo(150, 200, seed=0)
    found = detector.detect([image])[0]
    outputs = jax.device_get(detector._predict(detector.params, detector.preprocess(image)))
    valid = outputs["valid"][0]
    assert 0 < len(found["boxes"]) == valid.sum() <= 7
    np.testing.assert_array_equal(found["boxes"], outputs["boxes"][0][valid])
    np.testing.assert_array_equal(found["scores"], outputs["scores"][0][valid])
    assert found["class_names"] == [CLASS_NAMES[label] for label in outputs["classes"][0][valid]]
    expected_masks = roi_heads.paste_masks_in_image(
        torch.from_numpy(outputs["masks"][0][valid])[:, None], torch.from_numpy(outputs["boxes"][0][valid]), (150, 200)
    )[:, 0].numpy() > 0.5
    assert found["masks"].shape == (len(found["boxes"]), 150, 200)
    assert (found["masks"] != expected_masks).mean() < 1e-4  # float rounding at the 0.5 threshold


def test_score_threshold_and_one_compile_per_padded_size(detector):
    images = [photo(150, 200, seed=1), photo(140, 190, seed=2)]
    everything = detector.detect(images)
    detector.score_threshold = 0.25
    try:
        confident = detector.detect(images)
        detector.score_threshold = 1.1
        nothing = detector.detect(images[:1])[0]
    finally:
        detector.score_threshold = 0.0
    for all_of_them, kept in zip(everything, confident):
        assert np.all(np.diff(all_of_them["scores"]) <= 0)
        np.testing.assert_array_equal(kept["scores"], all_of_them["scores"][all_of_them["scores"] >= 0.25])
    assert nothing["masks"].shape == (0, 150, 200) and nothing["class_names"] == []
    # Both photos resize to 96 high and pad to 96x128 (as the first test's): one compile in all.
    assert detector._predict._cache_size() == 1
    assert detector.draw(images[0], everything[0]).size == (200, 150)


def test_class_names_must_fit_the_model(checkpoint):
    config = load_config_file(ROOT / "configs" / "mask_rcnn_tiny.py")
    with pytest.raises(ValueError, match="3 class names for a model with 5 class slots"):
        make_predictor(config, {}, CLASS_NAMES[:3])


def test_grey_rgba_float_pil_and_path_images_give_the_detections_of_their_rgb(detector, tmp_path):
    grey = photo(120, 160, seed=3)[:, :, 0]
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    expected = detector.detect([rgb])[0]
    rgba = np.concatenate([rgb, np.full((120, 160, 1), 7, np.uint8)], axis=2)
    Image.fromarray(rgb).save(tmp_path / "grey.png")
    forms = [grey, grey[:, :, None], rgba, rgb.astype(np.float64) / 255, Image.fromarray(grey), tmp_path / "grey.png"]
    for found in detector.detect(forms):
        np.testing.assert_allclose(found["boxes"], expected["boxes"], atol=1e-3)
        np.testing.assert_allclose(found["scores"], expected["scores"], atol=1e-5)
        assert found["class_names"] == expected["class_names"]
        assert (found["masks"] != expected["masks"]).mean() < 1e-3


@pytest.mark.parametrize("image, message", [
    (np.zeros((3, 40, 50), np.uint8), r"got shape \(3, 40, 50\); channels first"),
    (np.zeros((40, 50, 2), np.uint8), r"\[H, W, 4\] \(RGBA\), got shape \(40, 50, 2\)"),
    (np.zeros((0, 50, 3), np.uint8), "the image is empty"),
    (np.full((40, 50, 3), 200.0), r"float image must hold values in \[0, 1\], found \[200.0, 200.0\]"),
    (np.full((40, 50, 3), np.nan, np.float32), "float image must hold values in"),
    (np.zeros((40, 50, 3), np.int64), "uint8 .* or float .* image, got int64"),
])
def test_other_images_are_refused_saying_what_is_expected(detector, image, message):
    with pytest.raises(ValueError, match=message):
        detector.detect([image])
