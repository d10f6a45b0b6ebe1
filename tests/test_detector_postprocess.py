"""Class slots without a name never become detections (issue 23): the detector's post-processing
drops them before per-class NMS and the top D, so the other classes keep their detections and fill
the places those would have taken."""

import dataclasses
import pathlib

import jax
import numpy as np

from maskrcnn_jax.command_line import load_config_file
from maskrcnn_jax.detector.coco_classes import COCO_CLASS_NAMES
from maskrcnn_jax.detector.postprocess import postprocess_detections
from maskrcnn_jax.detector.spec import DetectorSpec, labels_without_class, spec_from_config

ROOT = pathlib.Path(__file__).resolve().parents[1]
NUM_CLASSES, PROPOSALS, DETECTIONS = 6, 40, 10
ABSENT = (2, 4)


def test_the_coco_heads_unnamed_slots_are_the_ids_coco_never_uses():
    assert labels_without_class(COCO_CLASS_NAMES) == (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)
    assert labels_without_class(("__background__", "a", "", "b", " ")) == (2, 4)


def test_spec_from_config_takes_absent_classes_from_the_class_names():
    config = load_config_file(ROOT / "configs" / "mask_rcnn_tiny.py")
    assert spec_from_config(config).absent_classes == ()
    assert spec_from_config(config, ("__background__", "N/A", "a", "b", "c")).absent_classes == (1,)


def _detections(spec: DetectorSpec) -> dict:
    rng = np.random.default_rng(0)
    centres = rng.uniform(20, 80, (PROPOSALS, 2))
    proposals = np.concatenate([centres - 10, centres + 10], axis=1).astype(np.float32)
    outputs = jax.jit(postprocess_detections, static_argnames="spec")(
        rng.normal(0, 2, (PROPOSALS, NUM_CLASSES)).astype(np.float32),
        rng.normal(0, 0.1, (PROPOSALS, NUM_CLASSES, 4)).astype(np.float32),
        proposals, np.ones(PROPOSALS, bool), np.array([100, 100], np.int32), spec=spec)
    valid = np.asarray(outputs["valid"])
    return {key: np.asarray(value)[valid] for key, value in outputs.items()}


def test_absent_classes_are_dropped_before_the_top_d():
    spec = DetectorSpec(num_classes=NUM_CLASSES, detections_per_image=DETECTIONS, score_threshold=0.05)
    # Reference: every detection the head makes (room for all), the absent classes removed, then the top D.
    everything = _detections(dataclasses.replace(spec, detections_per_image=PROPOSALS * NUM_CLASSES))
    assert np.isin(everything["classes"], ABSENT).sum() > 0 and len(everything["classes"]) > 2 * DETECTIONS
    named = ~np.isin(everything["classes"], ABSENT)
    expected = {key: value[named][:DETECTIONS] for key, value in everything.items()}

    found = _detections(dataclasses.replace(spec, absent_classes=ABSENT))
    assert not np.isin(found["classes"], ABSENT).any()
    np.testing.assert_array_equal(found["classes"], expected["classes"])
    np.testing.assert_array_equal(found["boxes"], expected["boxes"])
    np.testing.assert_array_equal(found["scores"], expected["scores"])
