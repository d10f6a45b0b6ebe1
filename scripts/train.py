"""Trains Mask R-CNN: resumes by itself from WORKDIR/checkpoints, saves and exits 0 on SIGTERM / SIGINT.

  python scripts/train.py --config configs/shapes_tiny.py --workdir /tmp/shapes_tiny [--config.train.num_steps=500]

Multi-host (one command per host; on Cloud TPU and SLURM the three flags are detected):
  python scripts/train.py --config ... --workdir gs://.../run --coordinator_address HOST0:1234 \
      --num_processes N --process_id I
See docs/training.md.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from maskrcnn_jax.training import (
    IncompatibleCheckpointError,
    NonFiniteLossError,
    initialize_distributed,
    train_and_evaluate,
)

_CONFIG = config_flags.DEFINE_config_file("config", None, "config file with get_config()", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "directory for checkpoints, metrics.jsonl and TensorBoard events")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "multi-host: process 0's host:port")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "multi-host: number of processes")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "multi-host: this process's index, 0 to num_processes - 1")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # Orbax logs every file it writes at INFO
    initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    try:
        train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    except (IncompatibleCheckpointError, NonFiniteLossError) as error:
        raise SystemExit(f"error: {error}")


if __name__ == "__main__":
    app.run(main)
