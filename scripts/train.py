"""Trains Mask R-CNN: resumes by itself from WORKDIR/checkpoints, saves and exits 0 on SIGTERM / SIGINT.

  python scripts/train.py --config configs/shapes_tiny.py --workdir /tmp/shapes_tiny [--config.train.num_steps=500]

Multi-host, one command per host (on Cloud TPU and SLURM leave the three flags out: jax detects them):
  python scripts/train.py --config configs/mask_rcnn_r50_fpn_coco.py --workdir /shared/run \
      --coordinator_address HOST0:1234 --num_processes N --process_id I
Compiled programs are kept in JAX's persistent cache ($MASKRCNN_JAX_CACHE_DIR, default
~/.cache/maskrcnn_jax/jax; set it to "" to turn it off), so a resumed run does not compile again.
One run per workdir: a second one refuses while WORKDIR/train.lock names a live run. See docs/training.md.
"""

from absl import flags

from maskrcnn_jax.command_line import define_config_flag, enable_compilation_cache, run
from maskrcnn_jax.training import (
    IncompatibleCheckpointError,
    NonFiniteLossError,
    initialize_distributed,
    train_and_evaluate,
)
from maskrcnn_jax.training.workdir_lock import DEFAULT_STALE_AFTER_SECONDS

_CONFIG = define_config_flag("config file with get_config(), e.g. configs/shapes_tiny.py")
_WORKDIR = flags.DEFINE_string("workdir", None, "directory for checkpoints/, metrics.jsonl and tensorboard/",
                               required=True)
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "multi-host: process 0's host:port")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "multi-host: number of processes")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "multi-host: this process's index, 0 to num_processes - 1")
_LOCK_STALE_SECONDS = flags.DEFINE_float(
    "workdir_lock_stale_seconds", DEFAULT_STALE_AFTER_SECONDS,
    "a WORKDIR/train.lock not refreshed for this long is taken over (its run refreshes it 4 times as often; "
    "a lock whose process is gone on this host is taken over at once)", lower_bound=1)
flags.mark_flags_as_required(["config"])


def main(argv) -> None:
    if len(argv) > 1:
        raise SystemExit(f"error: unexpected arguments {argv[1:]}")
    enable_compilation_cache()
    initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    try:
        train_and_evaluate(_CONFIG.value, _WORKDIR.value, workdir_lock_stale_seconds=_LOCK_STALE_SECONDS.value)
    except (IncompatibleCheckpointError, NonFiniteLossError) as error:
        raise SystemExit(f"error: {error}")


if __name__ == "__main__":
    run(main)
