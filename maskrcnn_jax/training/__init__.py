"""The trainer: train state, optax optimizer, jitted sharded step, Orbax checkpoints with exact
resume, logs, and `train_and_evaluate(config, workdir)` that runs it all (see docs/training.md)."""

from maskrcnn_jax.training.checkpoints import IncompatibleCheckpointError, latest_params, latest_step
from maskrcnn_jax.training.loop import NonFiniteLossError, train_and_evaluate
from maskrcnn_jax.training.mesh import make_mesh
from maskrcnn_jax.training.processes import initialize_distributed
from maskrcnn_jax.training.state import TrainState

__all__ = [
    "IncompatibleCheckpointError",
    "NonFiniteLossError",
    "TrainState",
    "initialize_distributed",
    "latest_params",
    "latest_step",
    "make_mesh",
    "train_and_evaluate",
]
