"""The demo (`make demo` -> scripts/demo.py -> maskrcnn_jax.demo.run_demo) on a few steps: its scores
equal pycocotools' own scoring of the results it wrote, its pictures have the expected layout, and
the curves it plots come from metrics.jsonl; drawing.py's pieces on hand-made inputs."""

import contextlib
import io
import json
import pathlib

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from maskrcnn_jax.command_line import load_config_file
from maskrcnn_jax.demo import PICTURE_COLUMNS, PICTURE_SIDE, draw_results, run_demo
from maskrcnn_jax.drawing import image_grid, training_curves, upscale
from maskrcnn_jax.evaluation import STAT_NAMES

REPO = pathlib.Path(__file__).resolve().parents[1]


def pycocotools_stats(annotation_file, results, iou_type) -> list[float]:
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth = COCO(str(annotation_file))
        evaluation = COCOeval(ground_truth, ground_truth.loadRes(results), iou_type)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return [float(value) for value in evaluation.stats]


def test_demo_on_a_few_steps_writes_scores_pictures_and_curves(tmp_path, capsys):
    config = load_config_file(REPO / "configs" / "shapes_tiny.py")
    config.train.num_steps = 4
    config.train.log_every = 2
    config.train.checkpoint_every = 4
    config.train.eval_every = 0  # the final scoring is the demo's own
    config.train.global_batch_size = 2
    config.data.shapes.num_train_images = 8
    config.data.shapes.num_eval_images = 5
    config.test.score_threshold = 0.0  # an untrained model: keep every detection so that there is something to score
    scores = run_demo(config, tmp_path)

    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics == scores.metrics and set(metrics) == {"bbox", "segm"}
    results = json.loads((tmp_path / "coco_results.json").read_text())
    assert results, "an untrained model with score threshold 0 still detects"
    annotation_file = tmp_path / "workdir" / "shapes" / "eval" / "annotations.json"
    for iou_type in ("bbox", "segm"):
        assert list(metrics[iou_type]) == list(STAT_NAMES)
        np.testing.assert_allclose([metrics[iou_type][name] for name in STAT_NAMES],
                                   pycocotools_stats(annotation_file, results, iou_type), atol=1e-12)
    assert set(json.loads((tmp_path / "per_category_ap.json").read_text())["segm"]) == {"square", "circle", "triangle"}
    printed = capsys.readouterr().out
    assert f"held-out mask AP@[.5:.95] {metrics['segm']['AP']:.3f}, box AP@[.5:.95] {metrics['bbox']['AP']:.3f}" in printed

    # Five held-out images, each upscaled by the whole factor nearest PICTURE_SIDE / its long side.
    images = json.loads(annotation_file.read_text())["images"]
    panels = [(image["width"] * round(PICTURE_SIDE / max(image["width"], image["height"])),
               image["height"] * round(PICTURE_SIDE / max(image["width"], image["height"]))) for image in images]
    cell_width, cell_height = max(w for w, _ in panels), max(h for _, h in panels)
    rows = -(-len(panels) // PICTURE_COLUMNS)
    picture = Image.open(tmp_path / "predictions.png")
    assert picture.size == (PICTURE_COLUMNS * cell_width + (PICTURE_COLUMNS + 1) * 4, rows * cell_height + (rows + 1) * 4)
    curves = Image.open(tmp_path / "training_curves.png")
    assert curves.size == (1100, 420)


def test_draw_results_draws_what_was_scored_above_the_threshold():
    image = np.full((20, 25, 3), 100, np.uint8)
    mask = np.zeros((20, 25), np.uint8)
    mask[8:16, 5:20] = 1
    rle = mask_utils.encode(np.asfortranarray(mask))
    everywhere = mask_utils.encode(np.asfortranarray(np.ones((20, 25), np.uint8)))
    results = [
        {"image_id": 7, "category_id": 2, "score": 0.9, "bbox": [5.0, 8.0, 15.0, 8.0], "segmentation": rle},
        {"image_id": 7, "category_id": 1, "score": 0.3, "bbox": [0.0, 0.0, 25.0, 20.0], "segmentation": everywhere},
        {"image_id": 8, "category_id": 1, "score": 0.9, "bbox": [0.0, 0.0, 25.0, 20.0], "segmentation": everywhere},
    ]
    picture = np.asarray(draw_results([{"image_id": 7, "image": image}], results, {1: "square", 2: "circle"},
                                      side=100)[0])
    assert picture.shape == (80, 100, 3)  # upscaled 4x
    tinted = picture[8 * 4 + 4:16 * 4 - 4, 5 * 4 + 4:20 * 4 - 4]  # inside the mask, away from the outline
    assert (tinted != 100).any(axis=-1).all() and (tinted == tinted[0, 0]).all()
    # Below the mask only the detections scoring under 0.5 or of another image would be: nothing is drawn.
    assert (picture[16 * 4 + 4:] == 100).all() and (picture[:, :4] == 100).all()


def test_training_curves_take_losses_and_ap_from_the_records():
    records = [
        {"step": 10, "loss": 2.0, "loss_mask": 0.5, "learning_rate": 0.01, "grad_norm": 3.0},
        {"step": 20, "loss": None, "loss_mask": None, "learning_rate": 0.02},  # a window of skipped steps
        {"step": 20, "eval/bbox_AP": 0.1, "eval/segm_AP": 0.2, "eval/segm_AP75": 0.05, "eval/bbox_AR1": 0.3},
        {"step": 30, "loss": 1.0, "loss_mask": 0.25},
        {"step": 30, "eval/bbox_AP": 0.4, "eval/segm_AP": 0.5},
    ]
    curves = training_curves(records)
    assert curves["losses"] == {"loss": ([10, 30], [2.0, 1.0]), "loss_mask": ([10, 30], [0.5, 0.25])}
    assert curves["ap"] == {"bbox_AP": ([20, 30], [0.1, 0.4]), "segm_AP": ([20, 30], [0.2, 0.5])}
    assert training_curves([]) == {"losses": {}, "ap": {}}


def test_image_grid_places_panels_row_by_row():
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    panels = [Image.new("RGB", (3, 2), colours[0]), Image.new("RGB", (2, 4), colours[1]),
              Image.new("RGB", (1, 1), colours[2])]
    grid = np.asarray(image_grid(panels, columns=2, gap=1))
    # Cells are 3 x 4 (the largest width and height); 2 columns, 2 rows, 1-pixel gaps around them.
    assert grid.shape == (2 * 4 + 3, 2 * 3 + 3, 3)
    np.testing.assert_array_equal(grid[1:3, 1:4], np.full((2, 3, 3), colours[0]))
    np.testing.assert_array_equal(grid[1:5, 5:7], np.full((4, 2, 3), colours[1]))
    np.testing.assert_array_equal(grid[6, 1], colours[2])
    white = np.ones(grid.shape[:2], bool)
    white[1:3, 1:4] = white[1:5, 5:7] = white[6, 1] = False
    assert (grid[white] == 255).all()
    with pytest.raises(ValueError, match="no panels"):
        image_grid([], columns=2)


def test_upscale_repeats_pixels_along_the_chosen_axes():
    masks = np.array([[[1, 0], [0, 0]]], bool)  # [1, 2, 2]
    up = upscale(masks, 3, axes=(1, 2))
    assert up.shape == (1, 6, 6) and up[0, :3, :3].all() and up.sum() == 9
    image = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    np.testing.assert_array_equal(upscale(image, 2)[::2, ::2], image)
