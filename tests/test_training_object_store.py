"""A gs:// workdir against a local GCS server (tests/gcs_emulator.py, gcp-storage-emulator in memory):
train_and_evaluate 2 steps of the tiny shapes config into gs://, then the same call resumed to 4;
the checkpoints, metrics.jsonl, TensorBoard events and evaluation results in the bucket; the lock;
and Detector / scripts/evaluate.py reading the gs:// workdir equal to reading a local copy of it.

The emulator ignores GCS's create-if-absent precondition, so the lock's race (two runs creating it at
the same instant) is not tested here, only its sequential logic (docs/object_store.md).
"""

import contextlib
import importlib.util
import io
import json
import os
import pathlib
import socket
import struct
import subprocess
import sys
import time
import urllib.request

os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")  # read when gcsfs is imported

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from etils import epath  # noqa: E402

pytest.importorskip("gcsfs", reason="gs:// needs gcsfs (pip install -e '.[test]')")
pytest.importorskip("gcp_storage_emulator", reason="the local GCS server needs gcp-storage-emulator ('.[test]')")
from google.cloud import storage  # noqa: E402  (comes with gcsfs)

from maskrcnn_jax.checkpoint import latest_step, load_checkpoint  # noqa: E402
from maskrcnn_jax.command_line import load_config_file  # noqa: E402
from maskrcnn_jax.inference.detector import Detector  # noqa: E402
from maskrcnn_jax.storage import move  # noqa: E402
from maskrcnn_jax.training import train_and_evaluate, workdir_lock  # noqa: E402
from maskrcnn_jax.training.metric_writer import read_metrics  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
BUCKET = "maskrcnn-jax-test"
OVERRIDES = {"train.num_steps": 2, "train.checkpoint_every": 2, "train.eval_every": 2, "train.log_every": 1,
             "train.global_batch_size": 2, "train.async_checkpointing": False, "data.shapes.num_train_images": 8,
             "data.shapes.num_eval_images": 4, "eval.batch_size": 2, "eval.write_results": True}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _forget_gcs_clients() -> None:
    """gcsfs and epath keep one filesystem per process, bound to the endpoint it was made with."""
    import gcsfs
    from etils.epath.backend import fsspec_backend

    gcsfs.GCSFileSystem.clear_instance_cache()
    if hasattr(fsspec_backend, "_get_filesystem"):
        fsspec_backend._get_filesystem.cache_clear()


@pytest.fixture(scope="module")
def bucket(tmp_path_factory):
    """gs://BUCKET on a local emulator for this module; the clients are pointed at it (endpoints from
    the environment, no credentials) and the shapes cache of gs:// workdirs is a temporary folder."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, str(REPO / "tests" / "gcs_emulator.py"), str(port), BUCKET],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(url, timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the GCS emulator did not start (exit code {server.poll()})") from None
                time.sleep(0.1)
        with pytest.MonkeyPatch.context() as environment:
            environment.setenv("STORAGE_EMULATOR_HOST", url)  # gcsfs and google-cloud-storage
            environment.setenv("TENSORSTORE_GCS_HTTP_URL", url)  # Orbax's arrays (tensorstore)
            environment.setenv("GOOGLE_AUTH_TOKEN_FOR_TESTING", "emulator")  # tensorstore: no credential search
            environment.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
            _forget_gcs_clients()
            yield f"gs://{BUCKET}"
            _forget_gcs_clients()
    finally:
        server.terminate()
        server.wait(timeout=30)


def _config(**overrides):
    config = load_config_file(REPO / "configs" / "shapes_tiny.py")
    config.update_from_flattened_dict({**OVERRIDES, **overrides})
    return config


@pytest.fixture(scope="module")
def run(bucket):
    """(workdir, what each of the two calls printed): 2 steps, then the same run resumed to 4."""
    workdir = f"{bucket}/run"
    printed = []
    for num_steps in (2, 4):
        with contextlib.redirect_stdout(io.StringIO()) as output:
            train_and_evaluate(_config(**{"train.num_steps": num_steps}), workdir)
        printed.append(output.getvalue())
    return workdir, printed


@pytest.fixture(scope="module")
def local_copy(run, tmp_path_factory):
    """A local copy of the gs:// workdir's checkpoints (what a user would download)."""
    import gcsfs

    workdir, _ = run
    local = tmp_path_factory.mktemp("copy") / "workdir"
    filesystem, prefix = gcsfs.GCSFileSystem(), workdir.removeprefix("gs://")
    for name in filesystem.find(f"{prefix}/checkpoints"):  # every object, one read each
        destination = local / name.removeprefix(f"{prefix}/")
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_bytes(filesystem.cat_file(name))
    return local


def _shapes_cache() -> pathlib.Path:
    """Where the gs:// workdir's shapes sets were generated (training/data.py's shapes_directory)."""
    return pathlib.Path(os.environ["XDG_CACHE_HOME"]) / "maskrcnn_jax" / "shapes"


def _events(path: epath.Path) -> list:
    """The Event protos of a TensorBoard event file (TFRecord framing: length, crc, data, crc)."""
    from tensorboardX.proto.event_pb2 import Event

    data, offset, events = path.read_bytes(), 0, []
    while offset < len(data):
        (length,) = struct.unpack("<Q", data[offset:offset + 8])
        events.append(Event.FromString(data[offset + 12:offset + 12 + length]))
        offset += 12 + length + 4
    return events


def test_the_checkpoints_are_committed_steps_in_the_bucket(run):
    workdir, printed = run
    steps = epath.Path(workdir) / "checkpoints"
    for step in (2, 4):
        assert (steps / str(step) / "commit_success.txt").is_file()  # Orbax's commit on gs://: no rename
        assert (steps / str(step) / "params").is_dir()
    assert latest_step(workdir) == 4
    assert f"starting at step 0 in {workdir}" in printed[0]
    assert f"resuming from step 2 ({workdir}/checkpoints/2)" in printed[1]
    assert not pathlib.Path("gs:").exists()  # nothing went to a local folder named after the URI


def test_metrics_hold_each_logged_step_once(run):
    """Appending on gs:// replaces the file: each record must survive the next one and the resume."""
    workdir, _ = run
    records = read_metrics(workdir)
    assert [record["step"] for record in records if "loss" in record] == [1, 2, 3, 4]  # the resume starts at 3
    assert [record["step"] for record in records if "eval/segm_AP" in record] == [2, 4]


def test_the_tensorboard_events_read_back_the_metrics(run):
    workdir, _ = run
    files = sorted((epath.Path(workdir) / "tensorboard").iterdir())
    assert len(files) == 2 and all(path.name.startswith("events.out.tfevents.") for path in files)  # one per call
    scalars = {(event.step, value.tag): value.simple_value
               for path in files for event in _events(path) for value in event.summary.value}
    expected = {(record["step"], name): np.float32(value) for record in read_metrics(workdir)
                for name, value in record.items() if name != "step" and value is not None}
    assert scalars == expected


def test_the_evaluation_results_are_in_the_bucket(run):
    workdir, _ = run
    results = json.loads((epath.Path(workdir) / "evaluation" / "coco_results.json").read_text())
    assert isinstance(results, list)
    assert {result["image_id"] for result in results} <= set(range(1, 5))


def test_a_live_lock_refuses_and_a_dead_holders_lock_is_taken_over(bucket, capsys):
    workdir = f"{bucket}/locked"
    lock = epath.Path(workdir) / workdir_lock.LOCK_FILE
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}))
    with pytest.raises(workdir_lock.WorkdirInUseError, match=f"pid {os.getpid()} on host"):
        train_and_evaluate(_config(), workdir)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout), "started": time.time()}))
    blob = storage.Client().bucket(BUCKET).blob("locked/" + workdir_lock.LOCK_FILE)
    with workdir_lock.held(workdir, stale_after_seconds=0.4):  # a heartbeat every 0.1 s
        assert json.loads(lock.read_text())["pid"] == os.getpid()
        assert "that process is gone" in capsys.readouterr().out
        with pytest.raises(workdir_lock.WorkdirInUseError):
            workdir_lock.acquire(workdir)
        blob.reload()
        generation = blob.generation
        time.sleep(0.5)
        blob.reload()
        assert blob.generation != generation  # rewritten by the heartbeat
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()  # released


def test_a_step_moves_aside_into_a_folder_that_holds_nothing_yet(bucket):
    """training/checkpoints._move_aside on gs://: an empty folder is no object there, so a rename
    into it needs the filesystem's recursive move."""
    step = epath.Path(f"{bucket}/moved/checkpoints/7")
    for name in ("params/a", "params/b/c", "metadata/metadata"):
        (step / name).write_text(name)
    destination = epath.Path(f"{bucket}/moved/damaged_checkpoints/7-now")
    destination.parent.mkdir(parents=True, exist_ok=True)
    move(step, destination)
    assert not step.exists()
    assert all((destination / name).read_text() == name for name in ("params/a", "params/b/c", "metadata/metadata"))


def test_the_detector_reads_the_bucket_as_its_local_copy(run, local_copy):
    workdir, _ = run
    params, config, class_names = load_checkpoint(workdir)
    local_params, local_config, local_class_names = load_checkpoint(local_copy)
    assert (config.to_dict(), class_names) == (local_config.to_dict(), local_class_names)
    assert jax.tree.structure(params) == jax.tree.structure(local_params)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(local_params)))
    image = next(_shapes_cache().glob("eval-*/images/*"))
    found, local_found = (Detector.from_checkpoint(path, score_threshold=0.0).detect([image])[0]
                          for path in (workdir, local_copy))
    assert len(found["scores"]) > 0
    for key in ("boxes", "scores", "classes"):
        np.testing.assert_array_equal(found[key], local_found[key])


def test_evaluate_script_scores_the_bucket_as_its_local_copy(run, local_copy, tmp_path):
    workdir, _ = run
    spec = importlib.util.spec_from_file_location("script_evaluate", REPO / "scripts" / "evaluate.py")
    evaluate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(evaluate)
    (eval_set,) = _shapes_cache().glob("eval-*")
    data = ["--annotations", str(eval_set / "annotations.json"), "--images", str(eval_set / "images")]
    with contextlib.redirect_stdout(io.StringIO()):
        assert evaluate.main(["evaluate.py", "--checkpoint", workdir, *data, "--output", f"{workdir}/scored"]) == 0
        assert evaluate.main(["evaluate.py", "--checkpoint", str(local_copy), *data, "--output", str(tmp_path)]) == 0
    metrics = json.loads((epath.Path(workdir) / "scored" / "metrics.json").read_text())
    assert metrics == json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics) == {"bbox", "segm"} and len(metrics["segm"]) == 12
