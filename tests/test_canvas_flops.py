"""The mean GFLOP per image over a dataset's sizes: each image at its canvas's cost (hand-computed)."""

import pytest

from canvas_flops import dataset_gflop_per_image  # benchmarks/, on the tests' path (pyproject.toml)

GFLOP = {(1344, 1344): {"train": 2000.0, "predict": 800.0}, (800, 1344): {"train": 1200.0, "predict": 500.0},
         (1344, 800): {"train": 1300.0, "predict": 600.0}}


def test_each_image_costs_its_canvas():
    sizes = [(480, 640), (427, 640), (640, 480), (500, 500)]  # 3 landscape (a square ties to the first), 1 portrait
    grouped = dataset_gflop_per_image(sizes, [(800, 1344), (1344, 800)], GFLOP)
    assert grouped["images"] == [3, 1]
    assert grouped["train"] == pytest.approx((3 * 1200 + 1300) / 4)
    assert grouped["predict"] == pytest.approx((3 * 500 + 600) / 4)
    square = dataset_gflop_per_image(sizes, [(1344, 1344)], GFLOP)
    assert square == {"images": [4], "train": 2000.0, "predict": 800.0}
