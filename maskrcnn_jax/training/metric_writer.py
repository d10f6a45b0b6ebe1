"""Scalars of a run, written by process 0 only: WORKDIR/metrics.jsonl (one json object per line,
{"step": s, name: value, ...}) and TensorBoard event files in WORKDIR/tensorboard (tensorboardX,
no TensorFlow needed).

On resume from step s, lines and events after s (logged by the interrupted run after its last
checkpoint) are dropped first, so each step appears once.
"""

import json
import math
import os
import pathlib

import jax

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_SUBDIR = "tensorboard"


def read_metrics(workdir: str | os.PathLike) -> list[dict]:
    """Every record of WORKDIR/metrics.jsonl, in order."""
    path = pathlib.Path(workdir) / METRICS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class MetricWriter:
    """Appends scalars to metrics.jsonl and TensorBoard; does nothing on processes other than 0."""

    def __init__(self, workdir: str | os.PathLike, *, resume_step: int | None = None):
        self.enabled = jax.process_index() == 0
        self.path = pathlib.Path(workdir) / METRICS_FILE
        self.summary_writer = None
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None:
            kept = [record for record in read_metrics(workdir) if record["step"] <= resume_step]
            self.path.write_text("".join(json.dumps(record) + "\n" for record in kept))
        from tensorboardX import SummaryWriter  # imports protobuf machinery: only on the writing process

        self.summary_writer = SummaryWriter(str(pathlib.Path(workdir) / TENSORBOARD_SUBDIR),
                                            purge_step=None if resume_step is None else resume_step + 1)

    def write(self, step: int, scalars: dict[str, float]) -> None:
        """One record {"step": step, **scalars}; non-finite values are written as null in the json."""
        if not self.enabled:
            return
        values = {name: float(value) for name, value in scalars.items()}
        record = {"step": int(step), **{name: (v if math.isfinite(v) else None) for name, v in values.items()}}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        for name, value in values.items():
            self.summary_writer.add_scalar(name, value, global_step=int(step))

    def flush(self) -> None:
        if self.summary_writer is not None:
            self.summary_writer.flush()

    def close(self) -> None:
        if self.summary_writer is not None:
            self.summary_writer.close()
            self.summary_writer = None
