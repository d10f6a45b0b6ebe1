"""One training run per workdir: WORKDIR/train.lock names the run that holds it.

The lock file holds {"host", "pid", "started"} (json) and is created atomically (O_EXCL) by process
0 of the run, which touches it every `stale_after_seconds / 4` while it runs (its modification
time is the heartbeat) and removes it at the end. A second run finds it and refuses, naming the
holder. A lock whose holder is gone is taken over with a message: its pid is dead on this host,
or its heartbeat is older than `stale_after_seconds` (a holder on another host of a shared
filesystem, which cannot be asked; a killed process leaves its lock behind).

Two runs that find the same stale lock at the same instant can both take it over (the removal and
the creation are two steps); a requeued job meets its old copy seconds apart, not at the same instant.

On gs:// the lock is an object created only if absent (google-cloud-storage's if_generation_match=0,
after a look for it) whose heartbeat is a rewrite (its "updated" time); the local GCS emulator of the
tests ignores the precondition, so only real GCS shows that two runs starting at once cannot both
create it. Other object stores are refused (no create-if-absent here).
"""

import contextlib
import json
import os
import socket
import threading
import time

import jax
import numpy as np
from etils import epath
from jax.experimental import multihost_utils

from maskrcnn_jax.storage import is_uri
from maskrcnn_jax.training.progress import say
from maskrcnn_jax.training.write_failures import WriteFailedError, naming

LOCK_FILE = "train.lock"
DEFAULT_STALE_AFTER_SECONDS = 600


class WorkdirInUseError(RuntimeError):
    """Another run holds the workdir (the message names it)."""


def _describe(holder: dict) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(holder.get("started", 0)))
    return f"pid {holder.get('pid')} on host {holder.get('host')} (started {started})"


def _pid_is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but another user's
        return True
    return True


class _LocalLockFile:
    """The lock file on a local or shared POSIX filesystem: created with O_EXCL, touched with utime."""

    def __init__(self, path: epath.Path):
        self.path = path

    def create(self, text: str) -> bool:
        """Writes `text` into a new lock file; False when the file exists already."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            descriptor = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        try:
            with naming("the workdir lock", self.path), os.fdopen(descriptor, "w") as f:
                f.write(text)
        except WriteFailedError:
            self.path.unlink()  # an empty lock would hold the workdir until it is stale
            raise
        return True

    def heartbeat_age_seconds(self) -> float:
        return time.time() - os.stat(self.path).st_mtime

    def touch(self) -> None:
        os.utime(self.path)


class _GcsLockFile:
    """The lock object on gs://: created only if absent (if_generation_match=0); the heartbeat
    rewrites it only if it is still the object this run wrote (another run may have taken it over)."""

    def __init__(self, path: epath.Path):
        from google.cloud import storage  # comes with gcsfs (the [gcs] extra)

        self.path = path
        bucket, name = os.fspath(path).split("://", 1)[1].split("/", 1)
        self.blob = storage.Client().bucket(bucket).blob(name)
        self.text = None

    def create(self, text: str) -> bool:
        from google.api_core.exceptions import PreconditionFailed

        if self.blob.exists():  # the usual refusal; the precondition below settles a race
            return False
        try:
            with naming("the workdir lock", self.path):
                self.blob.upload_from_string(text, if_generation_match=0)
        except PreconditionFailed:
            return False
        self.text = text
        return True

    def heartbeat_age_seconds(self) -> float:
        from google.api_core.exceptions import NotFound

        try:
            self.blob.reload()
        except NotFound:
            raise FileNotFoundError(self.path) from None
        return time.time() - self.blob.updated.timestamp()

    def touch(self) -> None:
        self.blob.upload_from_string(self.text, if_generation_match=self.blob.generation)


def _lock_file(workdir: str | os.PathLike):
    path = epath.Path(workdir) / LOCK_FILE
    if not is_uri(path):
        return _LocalLockFile(path)
    if not os.fspath(path).startswith("gs://"):
        # Without a create-if-absent here, two runs could both hold the workdir: refused, untested.
        raise ValueError(f"{workdir}: workdirs are local paths or gs:// URIs (no lock for other object stores)")
    return _GcsLockFile(path)


def _read_holder(path: epath.Path) -> dict:
    """The lock's content; {} when it cannot be parsed (a holder killed while writing it)."""
    try:
        holder = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return holder if isinstance(holder, dict) else {}


def why_stale(holder: dict, heartbeat_age_seconds: float, stale_after_seconds: float) -> str | None:
    """Why the lock of `holder` may be taken over, or None while its holder may still run."""
    if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int) \
            and not _pid_is_alive(holder["pid"]):
        return "that process is gone"
    if heartbeat_age_seconds > stale_after_seconds:
        return (f"its heartbeat is {heartbeat_age_seconds:.0f} s old (more than the {stale_after_seconds:.0f} s "
                f"after which a lock is stale)")
    return None


def acquire(workdir: str | os.PathLike, stale_after_seconds: float = DEFAULT_STALE_AFTER_SECONDS) -> dict:
    """Creates WORKDIR/train.lock naming this process and returns its content.

    Raises WorkdirInUseError when a live run holds it; takes over a stale lock, saying so.
    """
    return _acquire(_lock_file(workdir), workdir, stale_after_seconds)


def _acquire(lock, workdir, stale_after_seconds: float) -> dict:
    path = lock.path
    holder = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}
    for _ in range(3):  # a retry follows the removal of a stale lock, or the end of its holder
        if lock.create(json.dumps(holder) + "\n"):
            return holder
        try:
            previous = _read_holder(path)
            reason = why_stale(previous, lock.heartbeat_age_seconds(), stale_after_seconds)
        except FileNotFoundError:  # its holder has just ended
            continue
        if reason is None:
            raise WorkdirInUseError(
                f"{workdir} is in use by another training run: {_describe(previous)}, lock file {path}; "
                f"wait for it to end or stop it, or use another --workdir") from None
        say(f"taking over {path} from {_describe(previous)}: {reason}")
        path.unlink(missing_ok=True)
    raise WorkdirInUseError(f"{path} was created again by another run while this one took it over")


def release(workdir: str | os.PathLike, holder: dict) -> None:
    """Removes WORKDIR/train.lock if it still names `holder` (another run may have taken it over)."""
    path = epath.Path(workdir) / LOCK_FILE
    if path.is_file() and _read_holder(path) == holder:
        path.unlink()


def _keep_touching(lock, interval_seconds: float, stop: threading.Event) -> None:
    while not stop.wait(interval_seconds):
        # A missed heartbeat only makes the lock look older; one refused on gs:// (the lock was
        # taken over) leaves the other run's lock alone.
        with contextlib.suppress(Exception):
            lock.touch()


@contextlib.contextmanager
def held(workdir: str | os.PathLike, stale_after_seconds: float = DEFAULT_STALE_AFTER_SECONDS):
    """Holds the workdir for the duration of the `with` block (process 0 holds the lock file).

    Every process raises WorkdirInUseError when process 0 could not take it, so that no process of
    a multi-process job goes on alone.
    """
    lock = _lock_file(workdir)  # on every process: a workdir that cannot be locked is refused by all
    holder, error = None, None
    if jax.process_index() == 0:
        try:
            holder = _acquire(lock, workdir, stale_after_seconds)
        except WorkdirInUseError as refusal:
            error = refusal
    if jax.process_count() > 1:
        taken = multihost_utils.broadcast_one_to_all(np.int32(error is None))
        if error is None and not taken:
            error = WorkdirInUseError(f"process 0 could not take {epath.Path(workdir) / LOCK_FILE} (its error says why)")
    if error is not None:
        raise error
    stop = threading.Event()
    heartbeat = None
    if holder is not None:
        heartbeat = threading.Thread(target=_keep_touching, daemon=True, name="workdir lock heartbeat",
                                     args=(lock, stale_after_seconds / 4, stop))
        heartbeat.start()
    try:
        yield
    finally:
        if heartbeat is not None:
            stop.set()
            heartbeat.join()
            release(workdir, holder)
