"""scripts/compile_report.py on the tiny config over 8 CPU devices (the CI stand-in for a TPU
topology: the same code path but libtpu's devices): every field of the report, the gradients'
all-reduce at least the size of the trainable parameters, the RoIAlign loops at the trip counts the
config implies, and the HLO parsers on hand-written text."""

import json
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from maskrcnn_jax.command_line import load_config_file
from maskrcnn_jax.models import build_model, frozen_parameter_mask, init_params
from maskrcnn_jax.training.compile_report import collective_ops, report_canvases, while_loops

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "mask_rcnn_tiny.py"
COCO_CONFIG = ROOT / "configs" / "mask_rcnn_r50_fpn_coco.py"
STAGES = ["backbone + fpn", "rpn head + proposals", "targets + sampling", "roialign", "box head", "mask head",
          "losses", "optimizer"]
WITH_BACKWARD = {"backbone + fpn", "rpn head + proposals", "roialign", "box head", "mask head", "losses"}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    output = tmp_path_factory.mktemp("report") / "report.json"
    completed = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "compile_report.py"), f"--config={CONFIG}", "--topology=cpu:8",
         "--per_chip_batch=1", f"--output={output}"], capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    print(completed.stdout)
    reports = json.loads(output.read_text())
    assert len(reports) == 1  # the tiny config trains on one canvas: one compiled step
    return reports[0], completed.stdout


def test_report_has_every_field_for_eight_cpu_devices(report):
    report, printed = report
    assert report["topology"] == "cpu:8" and report["chips"] == 8 and report["global_batch"] == 8
    assert report["canvas"] == [128, 128] and report["dtype"] == "float32" and report["task"] == "train"
    assert report["compile_s"] > 0
    hbm = report["hbm"]
    assert all(hbm[name] >= 0 for name in ("arguments", "outputs", "temporaries", "aliased"))
    assert hbm["arguments"] > 0 and hbm["temporaries"] > 0
    assert hbm["total"] == hbm["arguments"] + hbm["outputs"] + hbm["temporaries"] - hbm["aliased"]
    assert report["hbm_capacity"] is None and report["fits"] is None and report["roofline"] is None  # no chip table
    assert report["flops_per_image"] > 1e8 and report["bytes_per_image"] > 1e7
    assert [row["stage"] for row in report["stages"]] == STAGES
    for row in report["stages"]:
        assert row["flops_per_image"] > 0 and row["bytes_per_image"] > 0, row
        assert (row["with_backward"] is not None) == (row["stage"] in WITH_BACKWARD), row
        if row["with_backward"] and row["stage"] != "roialign":  # a gather's transpose is a scatter: no FLOP
            assert row["with_backward"]["flops_per_image"] > row["flops_per_image"], row
    assert "HBM per chip" in printed and "forward + backward" in printed


def test_gradients_are_all_reduced_and_roialign_loops_are_listed(report):
    report, _ = report
    config = load_config_file(CONFIG)
    model = build_model(config)
    shapes = jax.eval_shape(lambda key: init_params(model, key), jax.random.key(0))
    frozen = frozen_parameter_mask(shapes, config.train.trainable_backbone_layers, norm=model.norm)
    trainable_bytes = sum(leaf.size * leaf.dtype.itemsize
                          for leaf, is_frozen in zip(jax.tree.leaves(shapes), jax.tree.leaves(frozen)) if not is_frozen)
    all_reduce = report["collectives"]["all-reduce"]
    assert all_reduce["count"] > 0 and all_reduce["bytes"] >= trainable_bytes
    # On a CPU RoIAlign pools 2 boxes per loop step: 512 sampled RoIs and 128 mask slots per image.
    rois, slots = config.targets.roi_batch_size_per_image, config.targets.mask_rois_per_image
    assert report["loops"].count(rois // 2) >= 2 and report["loops"].count(slots // 2) >= 2  # forward and backward


def test_hlo_parsers_on_hand_written_text():
    hlo = """
%cond (p: (s32[], f32[8])) -> pred[] {
  %c = s32[]{:T(128)} constant(64)
  %p = (s32[]{:T(128)}, f32[8]{0}) parameter(0)
  %g = s32[]{:T(128)} get-tuple-element(%p), index=0
  ROOT %lt = pred[]{:T(512)} compare(%g, %c), direction=LT, metadata={op_name="x"}
}

%data_cond (p: (s32[], pred[])) -> pred[] {
  %p = (s32[], pred[]) parameter(0)
  ROOT %g = pred[] get-tuple-element(%p), index=1
}

ENTRY %main {
  %w1 = (s32[], f32[8]) while(%t1), condition=%cond, body=%body
  %w2 = (s32[], pred[]) while(%t2), condition=%data_cond, body=%body2
  %w3 = (s32[]) while(%t3), condition=%other, body=%b3, backend_config={"known_trip_count":{"n":"12"}}
  %ar = f32[256,1024]{1,0} all-reduce(%x), replica_groups={}
  %ars = (bf16[8]{0}, f32[4,4]{1,0}) all-reduce-start(%y, %z), replica_groups={}
  %ag = s32[2,3]{1,0} all-gather(%q), dimensions={0}
}
"""
    assert while_loops(hlo) == [64, None, 12]
    collectives = collective_ops(hlo)
    assert collectives["all-reduce"] == {"count": 2, "bytes": 256 * 1024 * 4 + 8 * 2 + 16 * 4}
    assert collectives["all-gather"] == {"count": 1, "bytes": 24}
    assert collectives["reduce-scatter"]["count"] == 0
    np.testing.assert_equal(sorted(collectives), sorted(["all-reduce", "all-gather", "reduce-scatter", "all-to-all",
                                                         "collective-permute"]))


def test_the_trainer_is_reported_on_each_training_canvas_and_predict_on_each_evaluation_canvas():
    config = load_config_file(COCO_CONFIG)
    assert report_canvases(config, "train") == [(800, 1344), (1344, 800)]  # one compiled step per orientation
    assert report_canvases(config, "predict") == [(800, 1344), (1344, 800)]  # evaluation groups batches alike
    config.eval.canvases = ()
    assert report_canvases(config, "predict") == [(1344, 1344)]  # no evaluation canvases: input.canvas_size
