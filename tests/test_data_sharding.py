"""Host batches -> global arrays on a mesh of fake CPU devices, in subprocesses so that the rest of the
suite keeps its single device: 8 devices in one process, and 2 processes x 4 devices (multi-host)."""

import os
import socket
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from conftest import cpu_devices_flags
from maskrcnn_jax.data.sharding import global_batch

SINGLE_PROCESS = textwrap.dedent("""
    import jax, numpy as np
    from jax.sharding import NamedSharding, PartitionSpec
    from maskrcnn_jax.data.sharding import global_batch
    assert jax.device_count() == 8
    rng = np.random.default_rng(0)
    host = {"image": rng.normal(size=(8, 16, 16, 3)).astype(np.float32),
            "gt_boxes": rng.uniform(0, 16, (8, 5, 4)).astype(np.float32),
            "image_id": np.arange(100, 108, dtype=np.int64), "valid": np.arange(8) < 6}
    for shape, names in [((8,), ("data",)), ((4, 2), ("data", "model"))]:
        mesh = jax.make_mesh(shape, names, axis_types=(jax.sharding.AxisType.Auto,) * len(names))
        placed = global_batch(host, mesh)
        per_device_rows = 8 // shape[0]
        for key, value in placed.items():
            expected_dtype = np.int32 if key == "image_id" else host[key].dtype  # jax_enable_x64 is off
            assert value.shape == host[key].shape and value.dtype == expected_dtype, key
            assert value.sharding == NamedSharding(mesh, PartitionSpec("data")), (key, value.sharding)
            assert len(value.addressable_shards) == 8
            for shard in value.addressable_shards:
                rows = shard.index[0]
                assert shard.data.shape[0] == per_device_rows
                np.testing.assert_array_equal(np.asarray(shard.data), host[key][rows])
            np.testing.assert_array_equal(np.asarray(value), host[key])
        # A jitted reduction over the sharded batch sees every example.
        total = jax.jit(lambda ids, valid: (ids * valid).sum())(placed["image_id"], placed["valid"])
        assert int(total) == sum(range(100, 106)), int(total)
    print("ok")
""")

MULTI_PROCESS = textwrap.dedent("""
    import sys
    import jax, numpy as np
    process_id, port = int(sys.argv[1]), sys.argv[2]
    jax.config.update("jax_num_cpu_devices", 4)
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=process_id)
    sys.path.insert(0, "tests")
    from test_data_pipeline import EllipseSource, OPTIONS
    from maskrcnn_jax.data import pipeline
    from maskrcnn_jax.data.sharding import global_batch
    assert jax.process_count() == 2 and jax.device_count() == 8 and jax.local_device_count() == 4
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    # Evaluation shards by jax.process_index() by default: 10 records, global batch 8 -> 2 steps.
    batches = list(pipeline.evaluation_dataset(EllipseSource(10), global_batch_size=8, canvas_size=(64, 64),
                                               **OPTIONS))
    assert len(batches) == 2 and batches[0]["image"].shape[0] == 4
    seen = []
    for host in batches:
        placed = global_batch(host, mesh)
        assert placed["image"].shape == (8, 64, 64, 3)
        local = np.concatenate([np.asarray(s.data) for s in sorted(
            placed["image_id"].addressable_shards, key=lambda s: s.index[0].start)])
        np.testing.assert_array_equal(local, host["image_id"])
        everything = jax.jit(lambda x: x, out_shardings=jax.sharding.NamedSharding(
            mesh, jax.sharding.PartitionSpec()))({"id": placed["image_id"], "valid": placed["valid"]})
        seen += np.asarray(everything["id"])[np.asarray(everything["valid"])].tolist()
    assert sorted(seen) == list(range(1000, 1010)), seen
    print("ok", process_id)
""")


def run_python(code, *arguments, env_extra=None):
    env = {**os.environ, **(env_extra or {})}
    return subprocess.Popen([sys.executable, "-c", code, *arguments], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_global_batch_on_eight_fake_devices():
    process = run_python(SINGLE_PROCESS, env_extra={"XLA_FLAGS": cpu_devices_flags(8)})
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0 and stdout.strip().splitlines()[-1:] == ["ok"], stderr[-3000:]


def test_global_batch_from_two_processes_of_four_devices():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    processes = [run_python(MULTI_PROCESS, str(index), port) for index in range(2)]
    outputs = [process.communicate(timeout=180) for process in processes]
    for index, (process, (stdout, stderr)) in enumerate(zip(processes, outputs)):
        assert process.returncode == 0 and stdout.strip().splitlines()[-1] == f"ok {index}", stderr[-3000:]


def test_ids_beyond_int32_are_refused_rather_than_wrapped():
    mesh = jax.make_mesh((1,), ("data",), devices=jax.devices()[:1])
    placed = global_batch({"image_id": np.array([2**31 - 1], np.int64)}, mesh)
    assert int(placed["image_id"][0]) == 2**31 - 1
    with pytest.raises(ValueError, match="int32"):
        global_batch({"image_id": np.array([2**31], np.int64)}, mesh)
