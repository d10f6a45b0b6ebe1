"""evaluate_model's wiring (batches with padding, host paste of each detection at the original size,
label mapping, image ids) against torchvision's paste + pycocotools, and the script's model mode from a checkpoint."""

import collections
import json
import os
import pathlib
import subprocess
import sys
import types

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from conftest import cpu_devices_flags, shared_data_path
from maskrcnn_jax.checkpoint import save_checkpoint
from maskrcnn_jax.command_line import load_config_file
from maskrcnn_jax.data.coco import CocoSource
from maskrcnn_jax.data.pipeline import evaluation_dataset
from maskrcnn_jax.detector.coco_classes import COCO_CLASS_NAMES
from maskrcnn_jax.evaluation import (
    CocoEvaluator,
    STAT_NAMES,
    evaluate_model,
    evaluate_results,
    load_coco_ground_truth,
    class_slots,
    make_worker_pool,
)
from maskrcnn_jax.models import build_model
from random_params import random_params

torch = pytest.importorskip("torch")
roi_heads = pytest.importorskip("torchvision.models.detection.roi_heads")

ROOT = pathlib.Path(__file__).resolve().parents[1]

NUM_IMAGES = 5
MASK_SIZE = 28


class GroundTruthOracle:
    """A stand-in model whose detections are the ground truth of the batch being evaluated:
    boxes mapped back to original pixels, masks the pipeline's 112x112 GT crops mean-pooled to
    28x28 probabilities plus seeded noise (so no pasted value sits exactly on the 0.5 threshold)."""

    def __init__(self):
        self.batch = None
        self.rng = np.random.default_rng(0)
        self.detections = []  # (image_id, boxes, labels, scores, mask probabilities) for the reference

    def watch(self, batches):
        for batch in batches:
            self.batch = batch
            yield batch

    def predict(self, params, inputs):
        assert set(inputs) == {"image", "image_size", "original_size"}  # only what predict reads
        batch = self.batch
        ratios = np.asarray(inputs["original_size"], np.float32) / np.asarray(inputs["image_size"], np.float32)
        boxes = batch["gt_boxes"] * np.stack([ratios[:, 1], ratios[:, 0]] * 2, axis=-1)[:, None, :]
        crops = batch["gt_masks"].astype(np.float32)
        b, m, size, _ = crops.shape
        pooled = crops.reshape(b, m, MASK_SIZE, size // MASK_SIZE, MASK_SIZE, size // MASK_SIZE).mean(axis=(3, 5))
        masks = np.clip(pooled + self.rng.uniform(-0.02, 0.02, pooled.shape), 0.0, 1.0).astype(np.float32)
        scores = np.broadcast_to(np.linspace(0.9, 0.1, m, dtype=np.float32), (b, m))
        for i in np.flatnonzero(batch["valid"]):
            keep = batch["gt_valid"][i]
            self.detections.append((int(batch["image_id"][i]), boxes[i][keep], batch["gt_classes"][i][keep],
                                    scores[i][keep], masks[i][keep], tuple(batch["original_size"][i])))
        return {"boxes": boxes, "scores": scores, "classes": batch["gt_classes"], "masks": masks,
                "valid": batch["gt_valid"]}


# Pasted pixels whose float64 value lies this close to the 0.5 threshold are near-ties: a float32
# paste (ours, or torchvision's, whose CPU kernels differ between AVX2 and AVX-512 machines by up to
# 1e-6 here) is within 2.3e-6 of float64 on these detections (measured 2026-12-04, both), and may
# binarise them either way (issue 26). The oracle's masks put 4 of the ~4.6M pixels there (some
# exactly at 0.5, halfway between noise values clipped to 0 and 1); all others are >= 1.88e-5 away.
NEAR_TIE = 1e-5


def _torchvision_reference_results(detections, label_to_category_id, near_ties=False) -> list:
    """The oracle's detections pasted by torchvision in float64 (the same on every CPU kind),
    thresholded at 0.5 but for the near-ties (|p - 0.5| < NEAR_TIE), set to `near_ties`; RLE-encoded
    by pycocotools."""
    results = []
    for image_id, boxes, labels, scores, masks, (height, width) in detections:
        probabilities = roi_heads.paste_masks_in_image(
            torch.from_numpy(masks.astype(np.float64))[:, None], torch.from_numpy(boxes.astype(np.float64)),
            (int(height), int(width)))[:, 0].numpy()
        pasted = np.where(np.abs(probabilities - 0.5) < NEAR_TIE, near_ties, probabilities > 0.5)
        for box, label, score, mask in zip(boxes.astype(np.float64), labels, scores, pasted):
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            rle["counts"] = rle["counts"].decode("ascii")
            results.append({"image_id": image_id, "category_id": label_to_category_id[int(label)],
                            "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]], "score": float(score),
                            "segmentation": rle})
    return results


def test_evaluate_model_equals_torchvision_paste_and_pycocotools():
    folder = shared_data_path("coco_val2014_43")
    source = CocoSource(folder / "annotations.json", folder / "images")
    coco_gt = load_coco_ground_truth(folder / "annotations.json")
    records = [source[i] for i in range(NUM_IMAGES)]
    # Batches of 2 over 5 images: the last batch carries one padding example.
    batches = evaluation_dataset(records, global_batch_size=2, canvas_size=(512, 512), min_size=320, max_size=512,
                                 max_instances=max(len(r["boxes"]) for r in records), min_box_size=0.0,
                                 shard_index=0, shard_count=1)
    oracle = GroundTruthOracle()
    timings = {}
    metrics = evaluate_model(oracle.predict, None, oracle.watch(batches), coco_gt, source.label_to_category_id,
                             timings=timings)
    assert [d[0] for d in oracle.detections] == [r["image_id"] for r in records]
    reference, other_way = (
        evaluate_results(coco_gt, _torchvision_reference_results(oracle.detections, source.label_to_category_id, ties),
                         image_ids=[r["image_id"] for r in records]).metrics for ties in (False, True))
    # The near-tie pixels decide no IoU threshold: the metrics are the same whichever way they go, so
    # ours must equal them exactly on any CPU kind.
    assert reference == other_way
    for iou_type in ("bbox", "segm"):
        for name in STAT_NAMES:
            assert metrics[iou_type][name] == pytest.approx(reference[iou_type][name], abs=1e-12), (iou_type, name)
    # Detections that are the ground truth find every box at IoU 0.5 (only the evaluated images
    # count); not all at 0.95: the source's boxes hug the rasterised mask, COCO's the polygon.
    assert metrics["bbox"]["AP50"] == pytest.approx(1.0, abs=1e-12) and metrics["bbox"]["AP"] > 0.99
    assert 0.5 < metrics["segm"]["AP"] < 1.0
    assert set(timings) == {"data", "model", "paste", "rle", "cocoeval"}

    # A trainer calls this every N steps: the second call gives the same metrics, here with the
    # masks pasted and encoded in a worker process.
    oracle.detections.clear()
    oracle.rng = np.random.default_rng(0)  # the same mask noise as the first call
    pool = make_worker_pool(1)
    timings = {}
    try:
        again = evaluate_model(oracle.predict, None, oracle.watch(batches), coco_gt, source.label_to_category_id,
                               timings=timings, pool=pool)
    finally:
        pool.shutdown()
    assert again == metrics
    assert timings["paste"] > 0 and timings["rle"] > 0 and "wait" in timings


def test_label_mapping_for_torchvision_coco_head():
    coco_ids = {label: cat for label, cat in enumerate([1, 2, 3, 5, 90], start=1)}
    names = ("__background__", "a", "b", "c", "e", "z")
    source = types.SimpleNamespace(num_classes=6, class_names=names, label_to_category_id=coco_ids)
    same = class_slots(6, source)  # one slot per dataset class
    assert same.category_ids == coco_ids and same.class_names == names
    np.testing.assert_array_equal(same.label_slots, [0, 1, 2, 3, 4, 5])
    coco_head = class_slots(91, source)  # torchvision's COCO head
    assert coco_head.category_ids == {1: 1, 2: 2, 3: 3, 5: 5, 90: 90} and coco_head.class_names == COCO_CLASS_NAMES
    np.testing.assert_array_equal(coco_head.label_slots, [0, 1, 2, 3, 5, 90])
    with pytest.raises(ValueError, match="no label mapping fits"):
        class_slots(10, source)


def run_evaluate_script(*args: str, devices: int = 1) -> str:
    environment = {**os.environ, "JAX_PLATFORMS": "cpu",
                   "XLA_FLAGS": cpu_devices_flags(devices)}
    result = subprocess.run([sys.executable, "scripts/evaluate.py", *args], cwd=ROOT, capture_output=True, text=True,
                            timeout=600, env=environment)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_coco_evaluator_pads_every_images_ground_truth_and_maps_the_labels():
    """The one max_instances rule: the batches have room for the most instances of any image of the
    annotation file (counted here from the json), whatever config.data.max_instances says, so no
    ground truth is dropped; config.eval.max_images takes the first images; one slot per class
    keeps the dataset's labels."""
    folder = shared_data_path("coco_val2014_43")
    source = CocoSource(folder / "annotations.json", folder / "images")
    config = load_config_file(ROOT / "configs" / "mask_rcnn_tiny.py")
    config.model.num_classes = source.num_classes
    config.data.max_instances, config.eval.max_images, config.eval.host_workers = 1, 2, 0
    evaluator = CocoEvaluator(config, source, folder / "annotations.json", predict_fn=lambda params, batch: None)
    annotations = json.loads((folder / "annotations.json").read_text())["annotations"]
    assert evaluator.max_instances == max(collections.Counter(a["image_id"] for a in annotations).values()) > 1
    assert [record["image_id"] for record in evaluator.source] == [source[0]["image_id"], source[1]["image_id"]]
    assert evaluator.slots.category_ids == source.label_to_category_id


class RecordSubset:
    """Some records of a source (with its image_size and class attributes)."""

    def __init__(self, source, indices):
        self.source, self.indices = source, list(indices)

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, index):
        return self.source[self.indices[index]]

    def image_size(self, index):
        return self.source.image_size(self.indices[index])

    def __getattr__(self, name):
        return getattr(self.source, name)


def test_coco_evaluator_on_a_canvas_per_orientation_equals_each_orientation_alone(capsys):
    """config.eval.canvases: each batch on one canvas (landscape 96x128, portrait 128x96), each photo
    on its orientation's (seen by predict), every image scored once. Reference: the same evaluator on
    the landscape photos alone with the one landscape canvas, and on the portrait photos alone with
    the portrait canvas; the union of their detections equals the grouped run's (an image dropped or
    scored twice would differ; the canvas itself barely moves a detection: the padding is zeros as
    the convolutions' own, hence the direct check). The first 12 photos of coco_val2014_43
    (config.eval.max_images) hold 2 portraits."""
    folder = shared_data_path("coco_val2014_43")
    source = CocoSource(folder / "annotations.json", folder / "images")
    config = load_config_file(ROOT / "configs" / "mask_rcnn_tiny.py")
    config.model.num_classes = source.num_classes
    config.input.min_size, config.input.max_size = 96, 128
    config.test.score_threshold, config.test.detections_per_image = 0.0, 5  # random weights: keep detections
    config.eval.batch_size, config.eval.max_images, config.eval.host_workers = 4, 12, 0
    landscape, portrait = (96, 128), (128, 96)
    params = random_params(build_model(config))

    seen = []  # (canvas, original size) of every photo predict was given (blank rows are padding)

    def results_of(records, canvases):
        config.eval.canvases = canvases
        evaluator = CocoEvaluator(config, records, folder / "annotations.json")
        predict = evaluator.predict

        def recording_predict(params, inputs):
            images = np.asarray(inputs["image"])
            seen.extend((images.shape[1:3], tuple(int(side) for side in size))
                        for image, size in zip(images, np.asarray(inputs["original_size"])) if image.any())
            return predict(params, inputs)

        evaluator.predict = recording_predict
        results = evaluator.evaluate(params).results
        evaluator.close()
        return sorted(results, key=lambda r: (r["image_id"], -r["score"], r["bbox"]))

    grouped = results_of(source, (landscape, portrait))
    assert "canvases (96, 128), (128, 96)" in capsys.readouterr().out
    assert len(seen) == 12 + 4  # the first batch (4 photos) twice: warm-up (compile), then scored
    assert all(canvas == (portrait if height > width else landscape) for canvas, (height, width) in seen)
    sizes = [source.image_size(index) for index in range(12)]
    portraits = [index for index, (height, width) in enumerate(sizes) if height > width]
    assert len(portraits) == 2
    alone = results_of(RecordSubset(source, [i for i in range(12) if i not in portraits]), (landscape,))
    alone += results_of(RecordSubset(source, portraits), (portrait,))
    alone.sort(key=lambda r: (r["image_id"], -r["score"], r["bbox"]))
    assert {r["image_id"] for r in grouped} == {source[i]["image_id"] for i in range(12)}
    assert len(grouped) == len(alone) == 12 * 5
    for ours, reference in zip(grouped, alone):
        assert (ours["image_id"], ours["category_id"]) == (reference["image_id"], reference["category_id"])
        np.testing.assert_allclose(ours["bbox"], reference["bbox"], rtol=1e-5, atol=1e-3)
        np.testing.assert_allclose(ours["score"], reference["score"], rtol=1e-5)


def test_script_model_mode_agrees_with_results_mode(tmp_path):
    folder = shared_data_path("labelme_voc3")
    source = CocoSource(folder / "annotations.json", folder / "images")
    config = load_config_file(ROOT / "configs" / "mask_rcnn_tiny.py")
    config.model.num_classes = len(source.class_names)  # labelme_voc3: 20 classes + background
    config.test.detections_per_image = 10
    config.test.score_threshold = 0.0  # random weights: keep detections so the results are not empty
    config.input.min_size, config.input.max_size, config.input.canvas_size = 128, 192, (192, 192)
    save_checkpoint(tmp_path / "checkpoint", random_params(build_model(config)), config, source.class_names)
    annotations = ["--annotations", str(folder / "annotations.json")]
    # Two CPU devices: each batch of 2 is split over both.
    printed = run_evaluate_script("--checkpoint", str(tmp_path / "checkpoint"), "--images", str(folder / "images"),
                                  "--output", str(tmp_path / "model"), "--batch_size=2", *annotations, devices=2)
    assert "images/s" in printed and "cocoeval" in printed and "canvas (192, 192)" in printed
    # What it ran on (JAX on the CPU: no worker processes by default) and the split per stage.
    assert "evaluation: process 0 of 1, model on 2 of 2 cpu devices" in printed
    assert "mask paste and RLE in this process" in printed
    assert all(f"{stage}:" in printed for stage in ("data", "model", "paste", "rle", "wait", "cocoeval"))

    results = json.loads((tmp_path / "model" / "coco_results.json").read_text())
    images = {image["id"]: image for image in json.loads((folder / "annotations.json").read_text())["images"]}
    # 3 images (ids 0, 1, 2: id 0 must not be mistaken for "no id") x 10 detections; batch 2 pads one.
    assert sorted({r["image_id"] for r in results}) == [0, 1, 2] and len(results) == 30
    for r in results:
        assert r["segmentation"]["size"] == [images[r["image_id"]]["height"], images[r["image_id"]]["width"]]
        assert 1 <= r["category_id"] <= 20
    metrics = json.loads((tmp_path / "model" / "metrics.json").read_text())

    run_evaluate_script("--results", str(tmp_path / "model" / "coco_results.json"), "--output",
                        str(tmp_path / "rescored"), *annotations)
    assert json.loads((tmp_path / "rescored" / "metrics.json").read_text()) == metrics
