"""Scalars of a run, written by process 0 only: WORKDIR/metrics.jsonl (one json object per line,
{"step": s, name: value, ...}) and TensorBoard event files in WORKDIR/tensorboard (tensorboardX,
no TensorFlow needed).

A run starting at step s (0, or the checkpoint it resumes from) first drops the lines and hides the
events after s (logged by an interrupted run after its last checkpoint, or before its first), so
each step appears once.

Everything is written from the calling thread and flushed at once, so a failed write (a full disk)
raises WriteFailedError there, naming the file; a record that could not be written whole is cut
off again, and metrics.jsonl is replaced, never rewritten in place.
"""

import contextlib
import json
import math
import os
import pathlib
import time

import jax

from maskrcnn_jax.training.write_failures import naming

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_SUBDIR = "tensorboard"


def read_records(path: str | os.PathLike) -> list[dict]:
    """Every record of a json-lines file, in order; none when it does not exist."""
    path = pathlib.Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_metrics(workdir: str | os.PathLike) -> list[dict]:
    """Every record of WORKDIR/metrics.jsonl, in order."""
    return read_records(pathlib.Path(workdir) / METRICS_FILE)


def drop_records_after(path: pathlib.Path, step: int, what: str) -> None:
    """Keeps the records of the json-lines file `path` up to `step` (a run starting there writes the
    rest again); the file is replaced, never rewritten in place. `what` names it in a WriteFailedError."""
    if not path.exists():
        return
    kept = [record for record in read_records(path) if record["step"] <= step]
    replacement = path.with_name(path.name + ".tmp")
    with naming(what, path):
        try:
            replacement.write_text("".join(json.dumps(record) + "\n" for record in kept))
            os.replace(replacement, path)
        finally:
            replacement.unlink(missing_ok=True)  # left over only when the writing failed


def append_record(path: pathlib.Path, record: dict, what: str) -> None:
    """Appends one json line to `path` and flushes it; a line that could not be written whole is cut
    off again (a resumed run reads every line back). `what` names the file in a WriteFailedError."""
    with naming(what, path):
        size = path.stat().st_size if path.exists() else 0
        try:
            with path.open("a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError:
            with contextlib.suppress(OSError):
                os.truncate(path, size)
            raise


class MetricWriter:
    """Appends scalars to metrics.jsonl and TensorBoard; does nothing on processes other than 0."""

    def __init__(self, workdir: str | os.PathLike, *, first_step: int = 0):
        self.enabled = jax.process_index() == 0
        self.path = pathlib.Path(workdir) / METRICS_FILE
        self.events_directory = pathlib.Path(workdir) / TENSORBOARD_SUBDIR
        self.events = None
        if not self.enabled:
            return
        drop_records_after(self.path, first_step, "the metrics")
        # tensorboardX's SummaryWriter writes from a thread of its own, where a failure is a traceback
        # nobody can act on; its EventsWriter writes from this thread. Imported here: protobuf
        # machinery, needed only on the writing process.
        from tensorboardX.event_file_writer import EventsWriter
        from tensorboardX.proto.event_pb2 import Event, SessionLog

        with naming("the TensorBoard events", self.events_directory):
            self.events_directory.mkdir(parents=True, exist_ok=True)
            self.events = EventsWriter(str(self.events_directory / "events"))
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
