"""Trains Mask R-CNN: resumes by itself from WORKDIR/checkpoints, saves and exits 0 on SIGTERM / SIGINT.

  python scripts/train.py --config configs/shapes_tiny.py --workdir /tmp/shapes_tiny [--config.train.num_steps=500]

Multi-host, one command per host (on Cloud TPU and SLURM leave the three flags out: jax detects them):
  python scripts/train.py --config configs/mask_rcnn_r50_fpn_coco.py --workdir /shared/run \
      --coordinator_address HOST0:1234 --num_processes N --process_id I
Compiled programs are kept in JAX's persistent cache ($MASKRCNN_JAX_CACHE_DIR, default
~/.cache/maskrcnn_jax/jax; set it to "" to turn it off), so a resumed run does not compile again.
One run per workdir: a second one refuses while WORKDIR/train.lock names a live run. See docs/training.md.
"""

import sys

from absl import flags

from maskrcnn_jax.command_line import UsageError, run_script
from maskrcnn_jax.training import (
    IncompatibleCheckpointError,
    NonFiniteLossError,
    initialize_distributed,
    train_and_evaluate,
)
from maskrcnn_jax.training.workdir_lock import DEFAULT_STALE_AFTER_SECONDS


def define_flags(flag_values: flags.FlagValues) -> None:
    flags.DEFINE_string("workdir", None, "directory for checkpoints/, metrics.jsonl and tensorboard/", required=True,
                        flag_values=flag_values)
    flags.DEFINE_string("coordinator_address", None, "multi-host: process 0's host:port", flag_values=flag_values)
    flags.DEFINE_integer("num_processes", None, "multi-host: number of processes", flag_values=flag_values)
    flags.DEFINE_integer("process_id", None, "multi-host: this process's index, 0 to num_processes - 1",
                         flag_values=flag_values)
    flags.DEFINE_float(
        "workdir_lock_stale_seconds", DEFAULT_STALE_AFTER_SECONDS,
        "a WORKDIR/train.lock not refreshed for this long is taken over (its run refreshes it 4 times as often; "
        "a lock whose process is gone on this host is taken over at once)", lower_bound=1, flag_values=flag_values)


def train(flag_values: flags.FlagValues, positional: list[str]) -> None:
    if len(positional) > 1:
        raise UsageError(f"unexpected arguments: {' '.join(positional[1:])}")
    if flag_values.config is None:
        raise UsageError("--config is required (see --help)")
    initialize_distributed(flag_values.coordinator_address, flag_values.num_processes, flag_values.process_id)
    try:
        train_and_evaluate(flag_values.config, flag_values.workdir,
                           workdir_lock_stale_seconds=flag_values.workdir_lock_stale_seconds)
    except (IncompatibleCheckpointError, NonFiniteLossError) as error:
        raise SystemExit(f"error: {error}")


def main(argv: list[str] | None = None) -> int:
    return run_script(train, define_flags, argv, doc=__doc__, compilation_cache=True,
                      config_help="config file with get_config(), e.g. configs/shapes_tiny.py")


if __name__ == "__main__":
    sys.exit(main())
