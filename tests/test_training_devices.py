"""The jitted train step on 8 fake CPU devices against one device, and the non-finite guard.

One subprocess per architecture (the device count is fixed at jax's first use) builds the tiny
shapes model, takes two real batches of global size 8 from the pipeline, and runs the same two
steps on a mesh of all 8 devices and on a mesh of one device from the same initial state; then a
step from a state with a NaN weight (uint8 images cannot carry a NaN, and matching ignores a
non-finite GT box) goes through the 8-device step. The test compares what it saved.
Architecture v2 trains BatchNorm: its batch statistics span the global batch whatever the mesh
(torch's SyncBatchNorm), so the running statistics must agree too.
"""

import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import cpu_devices_flags

REPO = pathlib.Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import sys
    import jax, numpy as np
    from maskrcnn_jax.command_line import load_config_file
    from maskrcnn_jax.data import global_batch
    from maskrcnn_jax.models import build_model, frozen_parameter_mask, init_params
    from maskrcnn_jax.training import data as data_lib, mesh as mesh_lib, state as state_lib
    from maskrcnn_jax.training.loss import loss_fn_from_config
    from maskrcnn_jax.training.optimizer import learning_rate_schedule, sgd_without_learning_rate
    from maskrcnn_jax.training.step import make_train_step

    workdir, output, architecture = sys.argv[1], sys.argv[2], sys.argv[3]
    assert jax.device_count() == 8
    config = load_config_file("configs/shapes_tiny.py")
    config.model.architecture = architecture
    config.train.global_batch_size = 8
    config.data.shapes.num_train_images = 24

    source = data_lib.training_source(config, workdir)
    batches = data_lib.training_iterator(config, source)
    host_batches = [next(batches) for _ in range(3)]

    model = build_model(config)
    init = lambda key: init_params(model, key)
    frozen = frozen_parameter_mask(jax.eval_shape(init, jax.random.key(0)), 3, norm=model.norm)
    optimizer = sgd_without_learning_rate(frozen, momentum=0.9, weight_decay=1e-4)
    learning_rate = learning_rate_schedule(base_learning_rate=0.02, num_steps=10)
    initialize = state_lib.make_state_initializer(init, optimizer)
    loss_fn = loss_fn_from_config(config)

    # Seeded random parameters without compiling the initialiser (the steps are what is compared).
    rng = np.random.default_rng(0)
    params = jax.tree_util.tree_map_with_path(
        lambda path, leaf: rng.uniform(0.5, 1.5, leaf.shape).astype(leaf.dtype) if path[-1].key in ("var", "scale")
        else rng.uniform(-0.1, 0.1, leaf.shape).astype(leaf.dtype), jax.eval_shape(init, jax.random.key(0)))
    initial = state_lib.TrainState(np.int32(0), params, jax.device_get(optimizer.init(params)),
                                   np.array([0, 42], np.uint32))

    num_steps = 2 if architecture == "v1" else 1
    results = {}
    meshes = {"eight": mesh_lib.make_mesh(), "one": mesh_lib.make_mesh(jax.devices()[:1])}
    for name, mesh in meshes.items():
        abstract = state_lib.abstract_train_state(initialize, mesh)
        state = jax.device_put(initial, jax.tree.map(lambda leaf: leaf.sharding, abstract))
        train_step = make_train_step(loss_fn, optimizer, learning_rate, frozen, abstract, mesh)
        losses = []
        for host in host_batches[:num_steps]:
            state, metrics = train_step(state, global_batch(host, mesh))
            losses.append([float(metrics[key]) for key in sorted(metrics)])
        results[name] = jax.device_get(state)
        results[name + "_losses"] = np.array(losses)
        results[name + "_devices"] = len(state.params["fpn"]["inner_0"]["kernel"].sharding.device_set)
        if name == "eight":
            before = jax.tree.map(np.array, jax.device_get(state))
            before.params["fpn"]["inner_0"]["kernel"][0, 0, 0, 0] = np.nan
            state = jax.device_put(before, jax.tree.map(lambda leaf: leaf.sharding, abstract))
            state, metrics = train_step(state, global_batch(host_batches[2], mesh))
            results["nan"] = {"before": before, "after": jax.device_get(state),
                              "skipped": int(metrics["skipped"]), "loss": float(metrics["loss"])}
            results["compilations"] = train_step._cache_size()

    flat = {}
    for name in meshes:
        for path, leaf in jax.tree_util.tree_leaves_with_path(results[name].params):
            flat[f"{name}/params/{jax.tree_util.keystr(path)}"] = leaf
        flat[f"{name}/losses"] = results[name + "_losses"]
        flat[f"{name}/devices"] = results[name + "_devices"]
        flat[f"{name}/step"] = results[name].step
    flat["initial/step"] = initial.step
    for path, leaf in jax.tree_util.tree_leaves_with_path(initial.params):
        flat[f"initial/params/{jax.tree_util.keystr(path)}"] = leaf
    nan = results["nan"]
    for part in ("before", "after"):
        for path, leaf in jax.tree_util.tree_leaves_with_path(nan[part]):
            flat[f"nan_{part}/{jax.tree_util.keystr(path)}"] = leaf
    flat["nan/skipped"], flat["nan/loss"] = nan["skipped"], nan["loss"]
    flat["eight/compilations"] = results["compilations"]
    flat["metric_names"] = np.array(sorted(metrics))
    for path, leaf in jax.tree_util.tree_leaves_with_path(frozen):
        flat[f"frozen/{jax.tree_util.keystr(path)}"] = leaf
    np.savez(output, **flat)
    print("ok")
""")


@pytest.fixture(scope="module", params=["v1", "v2"])
def device_run(request, tmp_path_factory):
    directory = tmp_path_factory.mktemp("devices")
    output = directory / "results.npz"
    env = {**os.environ, "XLA_FLAGS": cpu_devices_flags(8), "JAX_PLATFORMS": "cpu"}
    process = subprocess.run([sys.executable, "-c", SCRIPT, str(directory / "workdir"), str(output), request.param],
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert process.returncode == 0 and process.stdout.strip().endswith("ok"), process.stderr[-4000:]
    with np.load(output) as saved:
        return {"architecture": request.param, **saved}


V2_UPDATE_BOUND = 1e-2


def is_statistic(architecture: str, name: str) -> bool:
    """A BatchNorm running statistic (v2), which the step replaces rather than the optimizer."""
    return architecture == "v2" and name.endswith(("['mean']", "['var']"))


def _params(results: dict, prefix: str) -> dict:
    return {key[len(prefix):]: value for key, value in results.items() if key.startswith(prefix)}


def test_eight_devices_give_the_losses_and_parameters_of_one_device(device_run):
    architecture = device_run["architecture"]
    assert int(device_run["eight/devices"]) == 8 and int(device_run["one/devices"]) == 1
    assert int(device_run["eight/step"]) == int(device_run["one/step"]) == (2 if architecture == "v1" else 1)
    # Every metric (losses, sample counts) to 1e-5; v2's gradient norm is held to the floor below.
    metric_names = list(device_run["metric_names"])
    compared = [index for index, name in enumerate(metric_names) if architecture == "v1" or name != "grad_norm"]
    np.testing.assert_allclose(device_run["eight/losses"][:, compared], device_run["one/losses"][:, compared], rtol=1e-5)
    initial = _params(device_run, "initial/params/")
    eight, one = _params(device_run, "eight/params/"), _params(device_run, "one/params/")
    assert eight.keys() == one.keys() == initial.keys() and len(eight) > 50
    frozen = _params(device_run, "frozen/")
    assert 0 < sum(map(bool, frozen.values())) < len(frozen)
    statistics = [name for name in eight if is_statistic(architecture, name)]
    if architecture == "v2":
        assert len(statistics) > 40 and all(frozen[name] for name in statistics)
    trainable = [name for name in eight if not frozen[name]]
    for name in statistics:
        # Running statistics move every step (frozen stages included, as in torch's train mode) and,
        # being computed over the global batch, by the same amount on 8 devices as on one.
        update_eight, update_one = eight[name] - initial[name], one[name] - initial[name]
        assert np.abs(update_one).max() > 0, name
        np.testing.assert_allclose(update_eight, update_one, rtol=1e-5, atol=1e-6, err_msg=name)
    for name in eight:
        if frozen[name] and name not in statistics:
            assert not (eight[name] - initial[name]).any() and not (one[name] - initial[name]).any(), name
    if architecture == "v1":
        for name in trainable:
            # The updates themselves agree, relative to the largest update of the leaf, up to the
            # float32 rounding of the parameters they are read back from (new - initial).
            update_eight, update_one = eight[name] - initial[name], one[name] - initial[name]
            scale = np.abs(update_one).max()
            assert scale > 0, name
            rounding = 2 * np.spacing(np.abs(one[name]).max())
            np.testing.assert_allclose(update_eight, update_one, rtol=0, atol=max(1e-4 * scale, rounding), err_msg=name)
    else:
        # v2's gradients are ill-conditioned: training-mode BatchNorm amplifies float32 rounding
        # (tests/test_loss_parity_torchvision.py: float32 gradients percents from float64 deep in the
        # backbone), and the 8-device step rounds differently (its BatchNorm sums run per device,
        # then across). Measured, norm of the update difference / norm of the update: 2.9e-4 (Intel
        # Xeon, 2026-12-04), 5.5e-4 (the machine of 2026-12-03). A bug is of order one: gradients of
        # one device's shard alone, or summed instead of averaged over the devices (8x). So the bound
        # is V2_UPDATE_BOUND, 20x the noise seen and 50x below a bug. (An earlier version measured
        # the noise from a run with parameters moved by 1e-7; on some CPU kinds that move changes
        # which RoIs are sampled, issue 26, and the "noise" became 4.9e-2.) Statistics per device
        # instead of over the global batch would already fail the losses above.
        difference = sum(np.sum(np.square(eight[name] - one[name], dtype=np.float64)) for name in trainable)
        size = sum(np.sum(np.square(one[name] - initial[name], dtype=np.float64)) for name in trainable)
        distance = np.sqrt(difference / size)
        print(f"v2 update: 8 vs 1 device {distance:.2e} (bound {V2_UPDATE_BOUND:.0e})")
        assert distance <= V2_UPDATE_BOUND, distance


def test_nan_step_on_devices_is_skipped_with_parameters_and_optimizer_state_unchanged(device_run):
    assert int(device_run["nan/skipped"]) == 1 and np.isnan(device_run["nan/loss"])
    before, after = _params(device_run, "nan_before/"), _params(device_run, "nan_after/")
    assert before.keys() == after.keys()
    for name in before:
        if name == ".step":
            assert int(after[name]) == int(before[name]) + 1  # the batch is consumed
        else:
            np.testing.assert_array_equal(after[name], before[name], err_msg=name)  # NaN equals NaN here
    assert any(name.startswith(".opt_state") for name in before)
    assert int(device_run["eight/compilations"]) == 1  # one compile for every step, the NaN step included
