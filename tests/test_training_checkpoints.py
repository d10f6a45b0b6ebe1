"""Training checkpoints without a model: state + data position + metadata round trip, the latest
parameters of a workdir, the compatibility check, and starting parameters from an earlier model."""

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from maskrcnn_jax.checkpoint import checkpoint_metadata, latest_params, latest_step, save_checkpoint
from maskrcnn_jax.training import checkpoints, initialization, mesh as mesh_lib
from maskrcnn_jax.training.state import TrainState

CLASS_NAMES = ("__background__", "square", "circle", "triangle")


def model_like_params(num_classes: int, seed: int = 0, stem: int = 8) -> dict:
    """A small tree with the top-level names of the model's parameters (class count in the predictors)."""
    rng = np.random.default_rng(seed)
    normal = lambda *shape: rng.normal(size=shape).astype(np.float32)  # noqa: E731
    return {
        "backbone": {"conv1": {"kernel": normal(3, 3, 3, stem)},
                     "layer1": {"0": {"conv1": {"kernel": normal(1, 1, stem, 4)}}}},
        "fpn": {"inner_0": {"kernel": normal(1, 1, 4, 4), "bias": normal(4)}},
        "box_predictor": {"cls_score": {"kernel": normal(6, num_classes)},
                          "bbox_pred": {"kernel": normal(6, 4 * num_classes)}},
        "mask_predictor": {"mask_fcn_logits": {"kernel": normal(1, 1, 4, num_classes)}},
    }


def tiny_config(num_classes: int = 4) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.model = ml_collections.ConfigDict({"num_classes": num_classes, "anchor_sizes": (8, 16),
                                              "backbone": {"depth": 50, "stage_sizes": (1, 1, 1, 1), "stem_width": 8}})
    config.train = ml_collections.ConfigDict({"num_steps": 10, "base_learning_rate": 0.02})
    return config


def save_training_step(workdir, step: int, params: dict, iterator, config=None) -> None:
    mesh = mesh_lib.make_mesh(jax.devices()[:1])
    state = jax.device_put(TrainState(jnp.int32(step), params, {"trace": params}, jnp.arange(2, dtype=jnp.uint32)),
                           mesh_lib.replicated(mesh))
    manager = checkpoints.checkpoint_manager(workdir, max_to_keep=2)
    checkpoints.save_checkpoint(manager, step, state, iterator,
                                checkpoint_metadata(config or tiny_config(), CLASS_NAMES))
    manager.wait_until_finished()
    manager.close()


def test_state_data_position_and_metadata_round_trip(tmp_path):
    dataset = grain.MapDataset.range(100).to_iter_dataset().batch(4)
    iterator = iter(dataset)
    params = model_like_params(4)
    for step in (3, 6, 9):
        next(iterator)
        save_training_step(tmp_path, step, jax.tree.map(lambda x, s=step: x + s, params), iterator)
    expected_next = next(iterator)
    # max_to_keep=2 keeps 6 and 9; an unfinished write (Orbax's temporary name) is never listed.
    (tmp_path / "checkpoints" / "12.orbax-checkpoint-tmp").mkdir()
    assert latest_step(tmp_path) == 9
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == ["6", "9"]

    mesh = mesh_lib.make_mesh(jax.devices()[:1])
    target = TrainState(jnp.int32(0), params, {"trace": params}, jnp.zeros(2, jnp.uint32))
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), jnp.asarray(x).dtype,
                                                           sharding=mesh_lib.replicated(mesh)), target)
    fresh_iterator = iter(dataset)
    manager = checkpoints.checkpoint_manager(tmp_path)
    state = checkpoints.restore_checkpoint(manager, 9, abstract, fresh_iterator)
    assert int(state.step) == 9
    np.testing.assert_array_equal(state.key, [0, 1])
    np.testing.assert_array_equal(state.params["fpn"]["inner_0"]["bias"], params["fpn"]["inner_0"]["bias"] + 9)
    np.testing.assert_array_equal(state.opt_state["trace"]["backbone"]["conv1"]["kernel"],
                                  params["backbone"]["conv1"]["kernel"] + 9)
    np.testing.assert_array_equal(next(fresh_iterator), expected_next)  # the data goes on where it stopped
    assert checkpoints.read_metadata(manager, 9) == checkpoint_metadata(tiny_config(), CLASS_NAMES)

    latest, config, class_names = latest_params(tmp_path)
    assert class_names == list(CLASS_NAMES) and config["model"]["num_classes"] == 4
    assert config["model"]["anchor_sizes"] == [8, 16]
    assert isinstance(latest["backbone"]["conv1"]["kernel"], np.ndarray)
    np.testing.assert_array_equal(latest["box_predictor"]["cls_score"]["kernel"],
                                  params["box_predictor"]["cls_score"]["kernel"] + 9)


def test_latest_params_of_a_workdir_without_checkpoints_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="a training run that saved no step yet"):
        latest_params(tmp_path)


def test_incompatible_fields_name_every_model_difference_and_ignore_training_keys():
    saved = checkpoint_metadata(tiny_config(4), CLASS_NAMES)["config"]
    other = tiny_config(5)
    other.model.backbone.stem_width = 16
    other.train.num_steps = 1000
    assert checkpoints.incompatible_fields(saved, other) == [
        "model.backbone.stem_width: checkpoint 8, config 16",
        "model.num_classes: checkpoint 4, config 5",
    ]
    assert checkpoints.incompatible_fields(saved, tiny_config(4)) == []
    with pytest.raises(checkpoints.IncompatibleCheckpointError, match="model.num_classes: checkpoint 4, config 5"):
        checkpoints.check_compatible(saved, tiny_config(5), "WORKDIR/checkpoints/10")


def _assert_tree_equal(first, second):
    assert jax.tree.structure(first) == jax.tree.structure(second)
    for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(second)):
        np.testing.assert_array_equal(a, b)


def test_init_all_with_another_class_count_keeps_random_predictors():
    random, loaded = model_like_params(4, seed=1), model_like_params(91, seed=2)
    merged = initialization.merge_initial_params(random, loaded, "all")
    for name in ("backbone", "fpn"):
        _assert_tree_equal(merged[name], loaded[name])
    for name in ("box_predictor", "mask_predictor"):
        _assert_tree_equal(merged[name], random[name])


def test_init_all_with_the_same_class_count_takes_everything_and_backbone_mode_only_the_backbone():
    random, loaded = model_like_params(4, seed=1), model_like_params(4, seed=2)
    _assert_tree_equal(initialization.merge_initial_params(random, loaded, "all"), loaded)
    merged = initialization.merge_initial_params(random, loaded, "backbone")
    _assert_tree_equal(merged["backbone"], loaded["backbone"])
    for name in ("fpn", "box_predictor", "mask_predictor"):
        _assert_tree_equal(merged[name], random[name])
    assert initialization.merge_initial_params(random, loaded, "none") is random


def test_init_from_a_checkpoint_of_another_backbone_names_the_mismatches():
    random, loaded = model_like_params(4, stem=8), model_like_params(4, stem=16)
    del loaded["fpn"]["inner_0"]["bias"]
    with pytest.raises(ValueError) as error:
        initialization.merge_initial_params(random, loaded, "all")
    message = str(error.value)
    assert "backbone/conv1/kernel: checkpoint (3, 3, 3, 16), model (3, 3, 3, 8)" in message
    assert "fpn/inner_0/bias: missing in the checkpoint" in message
    with pytest.raises(ValueError, match="'some'"):
        initialization.merge_initial_params(random, loaded, "some")


def test_initial_params_read_a_converted_checkpoint_and_a_training_workdir(tmp_path):
    converted = model_like_params(91, seed=3)
    converted_config = tiny_config(91)
    save_checkpoint(tmp_path / "converted", converted, converted_config,
                    ["__background__"] + [f"class {i}" for i in range(1, 91)])
    trained = model_like_params(4, seed=4)
    save_training_step(tmp_path / "workdir", 5, trained, iter(grain.MapDataset.range(8).to_iter_dataset()))
    random = jax.device_put(model_like_params(4, seed=5))
    backbone = tiny_config().model.backbone

    from_converted = initialization.initial_params(random, str(tmp_path / "converted"), "all", backbone)
    _assert_tree_equal(from_converted["backbone"], converted["backbone"])
    _assert_tree_equal(from_converted["box_predictor"], jax.device_get(random["box_predictor"]))
    from_workdir = initialization.initial_params(random, str(tmp_path / "workdir"), "all", backbone)
    _assert_tree_equal(from_workdir, trained)
    assert initialization.initial_params(random, "", "none", backbone) is None
    with pytest.raises(ValueError, match="config.init.checkpoint is empty"):
        initialization.initial_params(random, "", "backbone", backbone)
