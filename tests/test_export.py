"""scripts/export.py and what runs its artifact: `ExportedModel`, `Detector.from_exported` and
examples/serve_exported.py (in a process where maskrcnn_jax, Flax, torch and pycocotools cannot be
imported).

A tiny model (configs/mask_rcnn_tiny.py, random weights with the box regression and class logits
scaled down: unscaled random deltas stretch boxes into slivers whose IoU is float32 rounding) on
three real 480x640 COCO photos. They resize to 96x128 at scale 1/5 exactly, so torch's bilinear
samples whole pixels and the artifact's uint8 input equals the checkpoint Detector's float resize
(asserted): the exported program must then give the checkpoint Detector's detections. Where the
resize interpolates, rounding to uint8 changes the input (scores move by about 1e-3, docs/benchmarks.md):
there a float32 artifact (--input_dtype float32) must give the checkpoint Detector's detections.
"""

import importlib.util
import json
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from conftest import shared_data_path
from detection_matching import iou_matrix
from maskrcnn_jax import Detector
from maskrcnn_jax.checkpoint import save_checkpoint
from maskrcnn_jax.command_line import load_config_file
from maskrcnn_jax.data.image_io import load_image
from maskrcnn_jax.data.transforms import resize_image
from maskrcnn_jax.export import ExportedModel, export_detector, write_artifact
from maskrcnn_jax.export.exported_model import resized_photo
from maskrcnn_jax.models import build_model
from random_params import random_params

ROOT = pathlib.Path(__file__).resolve().parents[1]
CLASS_NAMES = ("__background__", "circle", "square", "triangle", "star")
PHOTOS = ("000000000133.jpg", "000000000164.jpg", "000000000192.jpg")  # 480x640 each
INTERPOLATED_PHOTOS = ("000000000074.jpg", "000000000294.jpg")  # 426x640 and 427x640: resized to 85x128
CANVAS = (96, 128)
# What the loader's process may not import: the library and every heavy dependency it has.
BLOCKED = ("maskrcnn_jax", "flax", "torch", "torchvision", "pycocotools", "orbax", "optax", "ml_collections",
           "grain", "tensorflow", "tensorflow_datasets", "chex")
BLOCKER = """
import runpy, sys
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError(f"{{name}} is blocked: the loader must not need it")
        return None
sys.meta_path.insert(0, Blocker())
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def run(*args: str) -> str:
    result = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny checkpoint, its detector and the artifact scripts/export.py made of it (one canvas)."""
    work = tmp_path_factory.mktemp("export")
    config = load_config_file(ROOT / "configs" / "mask_rcnn_tiny.py")
    config.test.score_threshold = 0.0  # random weights: keep every detection the model makes
    params = random_params(build_model(config))
    for head in ("rpn_head", "box_predictor"):
        params[head]["bbox_pred"]["kernel"] *= 0.01
    params["box_predictor"]["cls_score"]["kernel"] *= 0.01
    save_checkpoint(work / "checkpoint", params, config, CLASS_NAMES)
    printed = run("scripts/export.py", "--checkpoint", str(work / "checkpoint"),
                  "--output", str(work / "model.jaxexport"),
                  f"--canvas={CANVAS[0]}x{CANVAS[1]}", "--platforms=cpu,cuda")
    paths = [shared_data_path("coco_val2014_43", "images", name) for name in PHOTOS]
    return {"artifact": work / "model.jaxexport", "checkpoint": work / "checkpoint", "printed": printed,
            "paths": paths, "images": [load_image(path) for path in paths], "work": work, "config": config,
            "params": params}


def assert_same_detections(expected: dict, boxes, classes, scores) -> None:
    """Every expected detection has one of ours of its class at box IoU >= 0.99, score within 1e-4."""
    assert len(boxes) == len(expected["boxes"]) > 0
    ious = iou_matrix(np.asarray(expected["boxes"], np.float64), np.asarray(boxes, np.float64))
    ious[np.asarray(expected["classes"])[:, None] != np.asarray(classes)[None, :]] = 0
    best = ious.argmax(axis=1)
    assert (ious[np.arange(len(best)), best] >= 0.99).all()
    np.testing.assert_allclose(np.asarray(scores)[best], expected["scores"], atol=1e-4)


def test_the_json_beside_the_artifact_describes_it(exported):
    description = json.loads(exported["artifact"].with_suffix(".json").read_text())
    assert description["class_names"] == list(CLASS_NAMES) and description["jax_version"] == jax.__version__
    assert description["canvases"] == [{"canvas": list(CANVAS), "program": "program_96x128.bin"}]
    assert description["platforms"] == ["cpu", "cuda"]
    assert [entry["name"] for entry in description["inputs"]] == ["weights", "image", "image_size", "original_size"]
    assert description["inputs"][1] == {**description["inputs"][1], "shape": ["b", "Hc", "Wc", 3], "dtype": "uint8"}
    assert "rounded half to even to uint8" in description["preprocessing"]["resize"]["interpolation"]
    assert {entry["name"]: entry["shape"] for entry in description["outputs"]}["masks"] == ["b", 20, 28, 28]
    resize = description["preprocessing"]["resize"]
    assert (resize["min_size"], resize["max_size"]) == (96, 128)
    assert "exported 5 classes, uint8 canvases 96x128, for cpu, cuda in" in exported["printed"]


def test_one_artifact_at_batch_1_and_3_gives_the_checkpoint_detectors_detections(exported):
    model = ExportedModel.load(exported["artifact"])
    assert [str(dim) for dim in model.exported[CANVAS].in_avals[-3].shape] == ["b", "96", "128", "3"]  # symbolic batch
    images = exported["images"]
    for image in images:  # the premise (module docstring): rounding the resize to uint8 changes nothing here
        np.testing.assert_array_equal(resized_photo(image, 96, 128, "uint8"), resize_image(image, 96, 128))
    detector = Detector.from_checkpoint(exported["checkpoint"], score_threshold=0.0)
    expected = [detector.detect_with_mask_windows(image) for image in images]
    one_at_a_time = [model.predict([image]) for image in images]
    together = model.predict(images)
    assert together["boxes"].shape == (3, 20, 4)
    for b, reference in enumerate(expected):
        for outputs, slot in ((one_at_a_time[b], 0), (together, b)):
            valid = outputs["valid"][slot]
            assert_same_detections(reference, outputs["boxes"][slot][valid], outputs["classes"][slot][valid],
                                   outputs["scores"][slot][valid])
    assert {key: value._cache_size() for key, value in model._calls.items()} == {CANVAS: 2}  # batch 1 and 3


def test_a_float32_artifact_gives_the_checkpoint_detectors_detections_where_the_resize_interpolates(exported):
    images = [load_image(shared_data_path("coco_val2014_43", "images", name)) for name in INTERPOLATED_PHOTOS]
    for image in images:  # here rounding to uint8 changes the input: a uint8 artifact's scores move by ~1e-3
        assert not np.array_equal(resized_photo(image, 96, 128, "uint8"), resized_photo(image, 96, 128, "float32"))
    path = exported["work"] / "float32.jaxexport"
    write_artifact(path, *export_detector(exported["config"], exported["params"], CLASS_NAMES, [CANVAS], ["cpu"],
                                          input_dtype="float32"))
    model = ExportedModel.load(path)
    detector = Detector.from_checkpoint(exported["checkpoint"], score_threshold=0.0)
    together = model.predict(images)
    assert together["boxes"].shape == (2, 20, 4)
    for b, image in enumerate(images):
        valid = together["valid"][b]
        assert_same_detections(detector.detect_with_mask_windows(image), together["boxes"][b][valid],
                               together["classes"][b][valid], together["scores"][b][valid])


def test_exported_detector_detects_and_draws_like_the_checkpoints(exported):
    image = exported["images"][0]
    expected = Detector.from_checkpoint(exported["checkpoint"], score_threshold=0.3).detect([image])[0]
    detector = Detector.from_exported(exported["artifact"], score_threshold=0.3)
    found = detector.detect([image])[0]
    assert 0 < len(found["boxes"]) < 20 and found["class_names"] == expected["class_names"]
    assert_same_detections(expected, found["boxes"], found["classes"], found["scores"])
    assert (found["masks"] != expected["masks"]).mean() < 1e-4  # float rounding at the 0.5 threshold
    assert detector.preprocess(image)["image"].dtype == np.uint8
    assert detector.draw(image, found).size == (640, 480)


def test_loader_without_maskrcnn_jax_flax_or_torch_writes_predict_scripts_detections(exported):
    control = exported["work"] / "imports_flax.py"
    control.write_text("import flax\n")
    blocked = subprocess.run([sys.executable, "-c", BLOCKER.format(blocked=BLOCKED), str(control)], cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
    assert blocked.returncode != 0 and "flax is blocked" in blocked.stderr  # the blocker works
    output = exported["work"] / "served.json"
    printed = run("-c", BLOCKER.format(blocked=BLOCKED), "examples/serve_exported.py",
                  "--model", str(exported["artifact"]),
                  "--output", str(output), "--score_threshold=0.3", "--batch_size=3", *map(str, exported["paths"]))
    assert f"to {output}" in printed
    served = json.loads(output.read_text())
    detector = Detector.from_exported(exported["artifact"], score_threshold=0.3)
    spec = importlib.util.spec_from_file_location("script_predict", ROOT / "scripts" / "predict.py")
    predict = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(predict)
    expected = [entry for image_id, (name, image) in enumerate(zip(PHOTOS, exported["images"]), 1)
                for entry in predict.coco_entries(image_id, name, detector.detect_with_mask_windows(image))]
    assert len(served) == len(expected) > 3
    for mine, theirs in zip(served, expected):
        assert mine.keys() == theirs.keys()
        assert {k: mine[k] for k in ("image_id", "file_name", "category_id", "class_name")} == \
               {k: theirs[k] for k in ("image_id", "file_name", "category_id", "class_name")}
        np.testing.assert_allclose(mine["bbox"], theirs["bbox"], atol=1e-3)
        assert abs(mine["score"] - theirs["score"]) < 1e-5
        # The loader's own RLE encoder writes pycocotools' strings (a mask differing by a pixel
        # rounded at 0.5 would differ; the same program on the same input gives the same mask).
        assert mine["segmentation"] == theirs["segmentation"]
        assert mask_utils.decode(mine["segmentation"]).shape == (480, 640)
