"""One training run per workdir (training/workdir_lock.py): a second run refuses in one line naming
the holder; a lock whose process is gone, or whose heartbeat is older than the stale time, is taken
over with a message; the holder refreshes its heartbeat and removes only its own lock."""

import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import pytest

from maskrcnn_jax.checkpoint import latest_step
from maskrcnn_jax.command_line import load_config_file
from maskrcnn_jax.training import train_and_evaluate, workdir_lock

REPO = pathlib.Path(__file__).resolve().parents[1]


def write_lock(workdir: pathlib.Path, host: str, pid: int, age_seconds: float = 0.0) -> pathlib.Path:
    """A lock file as another run leaves it, its heartbeat `age_seconds` old."""
    path = workdir / workdir_lock.LOCK_FILE
    then = time.time() - age_seconds
    path.write_text(json.dumps({"host": host, "pid": pid, "started": then}) + "\n")
    os.utime(path, (then, then))
    return path


def test_a_second_run_on_a_held_workdir_refuses_naming_the_holder(tmp_path):
    with workdir_lock.held(tmp_path):
        lock = (tmp_path / workdir_lock.LOCK_FILE).read_text()
        with pytest.raises(workdir_lock.WorkdirInUseError) as refusal:
            train_and_evaluate(load_config_file(REPO / "configs" / "shapes_tiny.py"), tmp_path)
        assert (tmp_path / workdir_lock.LOCK_FILE).read_text() == lock
    message = str(refusal.value)
    assert "\n" not in message
    assert message.startswith(f"{tmp_path} is in use by another training run: pid {os.getpid()} on host "
                              f"{socket.gethostname()} (started ")
    assert message.endswith(f"lock file {tmp_path / 'train.lock'}; wait for it to end or stop it, "
                            "or use another --workdir")
    assert not (tmp_path / workdir_lock.LOCK_FILE).exists()  # released at the end of the first run
    assert latest_step(tmp_path) is None


def test_a_lock_whose_process_is_gone_is_taken_over(tmp_path, capsys):
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    path = write_lock(tmp_path, socket.gethostname(), int(ended.stdout))
    holder = workdir_lock.acquire(tmp_path)
    assert capsys.readouterr().out.startswith(
        f"taking over {path} from pid {int(ended.stdout)} on host {socket.gethostname()} (started ")
    assert json.loads(path.read_text()) == holder and holder["pid"] == os.getpid()


def test_a_lock_of_another_host_is_taken_over_once_its_heartbeat_is_older_than_the_stale_time(tmp_path, capsys):
    path = write_lock(tmp_path, "another-host", 1, age_seconds=30)
    with pytest.raises(workdir_lock.WorkdirInUseError, match="pid 1 on host another-host"):
        workdir_lock.acquire(tmp_path, stale_after_seconds=60)
    os.utime(path, (time.time() - 90,) * 2)
    workdir_lock.acquire(tmp_path, stale_after_seconds=60)
    assert "its heartbeat is 90 s old (more than the 60 s after which a lock is stale)" in capsys.readouterr().out


def test_the_holder_refreshes_its_heartbeat_and_leaves_a_lock_taken_over_from_it(tmp_path):
    path = tmp_path / workdir_lock.LOCK_FILE
    with workdir_lock.held(tmp_path, stale_after_seconds=0.2):  # a heartbeat every 0.05 s
        os.utime(path, (time.time() - 100,) * 2)
        time.sleep(0.2)
        assert time.time() - path.stat().st_mtime < 1
        write_lock(tmp_path, "another-host", 1)
    assert json.loads(path.read_text())["host"] == "another-host"


def test_a_workdir_uri_that_no_filesystem_opens_is_refused_in_one_line(tmp_path, monkeypatch):
    """A URI is never read as a local folder (pathlib would make ./nosuch:/bucket/run): gs:// works
    (tests/test_training_object_store.py), a scheme no installed filesystem opens stops at once."""
    monkeypatch.chdir(tmp_path)
    config = load_config_file(REPO / "configs" / "shapes_tiny.py")
    with pytest.raises(ValueError, match=r"^nosuch://bucket/run: no filesystem opens this scheme \(Protocol not known"):
        train_and_evaluate(config, "nosuch://bucket/run")
    assert list(tmp_path.iterdir()) == []
