"""Self-describing checkpoints: parameters, config and class names round-trip; a training workdir
written by an Orbax CheckpointManager is read at its latest complete step; clear errors."""

import json
import pathlib

import numpy as np
import orbax.checkpoint as ocp
import pytest

from maskrcnn_jax.checkpoint import (
    checkpoint_metadata,
    load_checkpoint,
    load_config,
    load_params,
    resolve_checkpoint,
    save_checkpoint,
    save_metadata,
)
from maskrcnn_jax.command_line import load_config_file

ROOT = pathlib.Path(__file__).resolve().parents[1]
CLASS_NAMES = ("__background__", "circle", "square", "triangle", "star")


@pytest.fixture(scope="module")
def config():
    return load_config_file(ROOT / "configs" / "mask_rcnn_tiny.py")


def small_params(value: float) -> dict:
    return {"box_predictor": {"cls_score": {"kernel": np.full((3, 5), value, np.float32), "bias": np.zeros(5, np.float32)}}}


def test_round_trip_keeps_params_config_and_class_names(config, tmp_path):
    save_checkpoint(tmp_path / "ckpt", small_params(1.5), config, CLASS_NAMES)
    params, restored, class_names = load_checkpoint(tmp_path / "ckpt")
    np.testing.assert_array_equal(params["box_predictor"]["cls_score"]["kernel"], np.full((3, 5), 1.5, np.float32))
    assert class_names == CLASS_NAMES
    # JSON has no tuples: they come back as tuples, and the whole config compares equal.
    assert restored.model.backbone.stage_sizes == (1, 1, 1, 1) and restored.input.canvas_size == (128, 128)
    assert restored == config
    metadata = json.loads((tmp_path / "ckpt" / "metadata.json").read_text())
    assert metadata["class_names"] == list(CLASS_NAMES) and metadata["config"]["model"]["num_classes"] == 5
    with pytest.raises(FileExistsError):
        save_checkpoint(tmp_path / "ckpt", small_params(2.0), config, CLASS_NAMES)


def test_class_names_must_fill_the_models_slots(config, tmp_path):
    with pytest.raises(ValueError, match="4 class names for a model with 5 class slots"):
        save_checkpoint(tmp_path / "ckpt", small_params(0.0), config, CLASS_NAMES[:4])


def test_training_workdir_reads_the_latest_step_with_metadata(config, tmp_path):
    """A trainer's layout: WORKDIR/checkpoints/<step>/ from a CheckpointManager whose item "params"
    is the parameter tree, then metadata.json. A step whose metadata is missing (preempted between
    the two writes) is passed over."""
    manager = ocp.CheckpointManager(tmp_path / "workdir" / "checkpoints")
    for step in (100, 200, 300):
        args = ocp.args.Composite(params=ocp.args.StandardSave(small_params(step)),
                                  opt_state=ocp.args.StandardSave({"count": np.int32(step)}))
        manager.save(step, args=args)
        manager.wait_until_finished()
        if step != 300:
            save_metadata(tmp_path / "workdir" / "checkpoints" / str(step), config, CLASS_NAMES)
    manager.close()
    assert resolve_checkpoint(tmp_path / "workdir") == tmp_path / "workdir" / "checkpoints" / "200"
    assert resolve_checkpoint(tmp_path / "workdir" / "checkpoints").name == "200"
    np.testing.assert_array_equal(load_params(tmp_path / "workdir")["box_predictor"]["cls_score"]["kernel"],
                                  np.full((3, 5), 200, np.float32))
    assert load_config(tmp_path / "workdir") == config


def test_trainer_workdir_is_read_through_its_metadata_item(config, tmp_path):
    """What maskrcnn_jax.training.checkpoints writes (items params, train_state and a JSON item
    metadata) is what predict.py, evaluate.py and Detector read with --checkpoint WORKDIR."""
    manager = ocp.CheckpointManager(tmp_path / "workdir" / "checkpoints")
    for step in (10, 20):
        manager.save(step, args=ocp.args.Composite(
            params=ocp.args.StandardSave(small_params(step)),
            train_state=ocp.args.StandardSave({"step": np.int32(step)}),
            metadata=ocp.args.JsonSave(checkpoint_metadata(config, CLASS_NAMES)),
        ))
        manager.wait_until_finished()
    manager.close()
    params, restored, class_names = load_checkpoint(tmp_path / "workdir")
    np.testing.assert_array_equal(params["box_predictor"]["cls_score"]["kernel"], np.full((3, 5), 20, np.float32))
    assert restored == config and class_names == CLASS_NAMES


def test_not_a_checkpoint_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_params(tmp_path / "absent")
    (tmp_path / "old").mkdir()
    with pytest.raises(FileNotFoundError, match="has no metadata.json"):
        load_checkpoint(tmp_path / "old")
