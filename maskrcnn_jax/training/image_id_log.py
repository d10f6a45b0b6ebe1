"""Which images each training step read, per process (config.train.record_image_ids): one json line
{"step": s, "image_id": [ids of this process's valid examples]} per step in
WORKDIR/image_ids/process_{i}-of-{n}.jsonl. It finds the photos behind a loss spike or a skipped
step, and shows how the processes split each global batch (tests/test_training_distributed.py).

Like metrics.jsonl, a run starting at step s first drops the lines after s (each step appears once).
Written from the calling thread, one small line per step: meant for debugging runs, off by default.
"""

import os

import jax
import numpy as np
from etils import epath

from maskrcnn_jax.training.metric_writer import append_record, drop_records_after, read_records

IMAGE_IDS_SUBDIR = "image_ids"


def image_ids_file(workdir: str | os.PathLike, process_index: int, process_count: int) -> epath.Path:
    return epath.Path(workdir) / IMAGE_IDS_SUBDIR / f"process_{process_index}-of-{process_count}.jsonl"


def read_image_ids(workdir: str | os.PathLike, process_index: int, process_count: int) -> list[dict]:
    """The records {"step", "image_id"} that process `process_index` of `process_count` wrote, in order."""
    return read_records(image_ids_file(workdir, process_index, process_count))


class ImageIdLog:
    """Appends this process's image ids of each step to its file in WORKDIR/image_ids."""

    def __init__(self, workdir: str | os.PathLike, *, first_step: int = 0):
        self.path = image_ids_file(workdir, jax.process_index(), jax.process_count())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        drop_records_after(self.path, first_step, "the image ids")

    def write(self, step: int, host_batch: dict) -> None:
        """host_batch: this process's batch {"image_id" int [B], "valid" bool [B], ...} for `step`."""
        image_ids = np.asarray(host_batch["image_id"])[np.asarray(host_batch["valid"])]
        append_record(self.path, {"step": int(step), "image_id": [int(i) for i in image_ids]}, "the image ids")
