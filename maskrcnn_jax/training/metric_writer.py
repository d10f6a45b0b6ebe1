"""Scalars of a run, written by process 0 only: WORKDIR/metrics.jsonl (one json object per line,
{"step": s, name: value, ...}) and TensorBoard event files in WORKDIR/tensorboard (tensorboardX,
no TensorFlow needed).

A run starting at step s (0, or the checkpoint it resumes from) first drops the lines and hides the
events after s (logged by an interrupted run after its last checkpoint, or before its first), so
each step appears once.

Everything is written from the calling thread and flushed at once, so a failed write (a full disk)
raises WriteFailedError there, naming the file; a record that could not be written whole is cut
off again, and metrics.jsonl is replaced, never rewritten in place.

On an object store (a gs:// workdir) nothing can be appended: each record rewrites the whole
json-lines file, and the events file is kept in memory and written whole at each flush
(`ObjectRecordWriter`). Both files stay small (scalars every config.train.log_every steps).
"""

import contextlib
import json
import math
import os
import time

import jax
from etils import epath

from maskrcnn_jax.storage import is_uri, rewrite
from maskrcnn_jax.training.write_failures import naming

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_SUBDIR = "tensorboard"


def read_records(path: str | os.PathLike) -> list[dict]:
    """Every record of a json-lines file, in order; none when it does not exist."""
    path = epath.Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_metrics(workdir: str | os.PathLike) -> list[dict]:
    """Every record of WORKDIR/metrics.jsonl, in order."""
    return read_records(epath.Path(workdir) / METRICS_FILE)


def drop_records_after(path: epath.Path, step: int, what: str) -> None:
    """Keeps the records of the json-lines file `path` up to `step` (a run starting there writes the
    rest again); the file is replaced, never rewritten in place. `what` names it in a WriteFailedError."""
    if not path.exists():
        return
    kept = [record for record in read_records(path) if record["step"] <= step]
    with naming(what, path):
        rewrite(path, "".join(json.dumps(record) + "\n" for record in kept))


def append_record(path: epath.Path, record: dict, what: str) -> None:
    """Appends one json line to `path` and flushes it; a line that could not be written whole is cut
    off again (a resumed run reads every line back). On an object store, where opening with "a"
    silently starts the file again, the file is read and written whole with the line added. `what`
    names the file in a WriteFailedError."""
    line = json.dumps(record) + "\n"
    if is_uri(path):
        with naming(what, path):
            path.write_text((path.read_text() if path.exists() else "") + line)
        return
    with naming(what, path):
        size = os.path.getsize(path) if path.exists() else 0
        try:
            with path.open("a") as f:
                f.write(line)
        except OSError:
            with contextlib.suppress(OSError):
                os.truncate(path, size)
            raise


class ObjectRecordWriter:
    """A tensorboardX record writer for object stores: the event file is kept in memory and written
    whole at each flush (an object cannot be appended to). tensorboardX's own gs:// writer uploads
    again when it is garbage-collected after close(), e.g. at exit, when the store may be gone."""

    def __init__(self, path: str):
        self.path, self.data, self.unwritten = epath.Path(path), bytearray(), False

    def write(self, data: bytes) -> None:
        self.data += data
        self.unwritten = True

    def flush(self) -> None:
        if self.unwritten:
            self.path.write_bytes(bytes(self.data))
            self.unwritten = False

    def close(self) -> None:
        self.flush()


class _ObjectRecordWriterFactory:
    def open(self, path: str) -> ObjectRecordWriter:
        return ObjectRecordWriter(path)

    def directory_check(self, path: str) -> None:
        pass  # an object store has no folders to create


class MetricWriter:
    """Appends scalars to metrics.jsonl and TensorBoard; does nothing on processes other than 0."""

    def __init__(self, workdir: str | os.PathLike, *, first_step: int = 0):
        self.enabled = jax.process_index() == 0
        self.path = epath.Path(workdir) / METRICS_FILE
        self.events_directory = epath.Path(workdir) / TENSORBOARD_SUBDIR
        self.events = None
        if not self.enabled:
            return
        drop_records_after(self.path, first_step, "the metrics")
        # tensorboardX's SummaryWriter writes from a thread of its own, where a failure is a traceback
        # nobody can act on; its EventsWriter writes from this thread. Imported here: protobuf
        # machinery, needed only on the writing process.
        from tensorboardX import record_writer
        from tensorboardX.event_file_writer import EventsWriter
        from tensorboardX.proto.event_pb2 import Event, SessionLog

        if is_uri(self.events_directory):  # tensorboardX picks a file's writer by its scheme
            record_writer.register_writer_factory(os.fspath(self.events_directory).split("://")[0],
                                                  _ObjectRecordWriterFactory())

        with naming("the TensorBoard events", self.events_directory):
            self.events_directory.mkdir(parents=True, exist_ok=True)
            self.events = EventsWriter(os.fspath(self.events_directory / "events"))
            # TensorBoard hides the events of steps >= this one written by earlier runs.
            self.events.write_event(Event(step=first_step + 1, wall_time=time.time(),
                                          session_log=SessionLog(status=SessionLog.START)))
            self.events.flush()

    def write(self, step: int, scalars: dict[str, float]) -> None:
        """One record {"step": step, **scalars}; non-finite values are written as null in the json."""
        if not self.enabled:
            return
        from tensorboardX.proto.event_pb2 import Event
        from tensorboardX.summary import scalar

        values = {name: float(value) for name, value in scalars.items()}
        record = {"step": int(step), **{name: (v if math.isfinite(v) else None) for name, v in values.items()}}
        append_record(self.path, record, "the metrics")
        with naming("the TensorBoard events", self.events_directory):
            for name, value in values.items():
                self.events.write_event(Event(step=int(step), wall_time=time.time(), summary=scalar(name, value)))
            self.events.flush()

    def close(self) -> None:
        """Closes the events file; after a failed write it only lets go of it (the failure is reported)."""
        if self.events is not None:
            events, self.events = self.events, None
            with contextlib.suppress(OSError):
                events.close()
