"""The trainer: train state, optax optimizer, jitted sharded step, Orbax checkpoints with exact
resume, logs, and `train_and_evaluate(config, workdir)` that runs it all (see docs/training.md)."""

from maskrcnn_jax.training.checkpoints import IncompatibleCheckpointError, NoRestorableCheckpointError
from maskrcnn_jax.training.loop import NonFiniteLossError, train_and_evaluate
from maskrcnn_jax.training.mesh import make_mesh
from maskrcnn_jax.training.processes import initialize_distributed
from maskrcnn_jax.training.state import TrainState
from maskrcnn_jax.training.workdir_lock import WorkdirInUseError
from maskrcnn_jax.training.write_failures import WriteFailedError

__all__ = [
    "IncompatibleCheckpointError",
    "NoRestorableCheckpointError",
    "NonFiniteLossError",
    "TrainState",
    "WorkdirInUseError",
    "WriteFailedError",
    "initialize_distributed",
    "make_mesh",
    "train_and_evaluate",
]
