"""Where arrays live: the device mesh, the one place that decides how the train state and batches
are sharded, and joining the processes of a multi-host run.

Today the batch is split over the mesh's `data` axis and the train state is replicated; sharding
parameters over a second axis (FSDP) would change `state_shardings` only.
"""

import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from maskrcnn_jax.data.sharding import batch_sharding

DATA_AXIS = "data"

__all__ = ["DATA_AXIS", "batch_sharding", "initialize_distributed", "make_mesh", "replicated", "state_shardings"]


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None) -> None:
    """Joins this process to a multi-process run (`jax.distributed.initialize`), before any other jax use.

    With no arguments, jax detects the cluster itself (Cloud TPU, SLURM, ...); elsewhere give all
    three (the coordinator is process 0's "host:port", reachable by every process). Does nothing
    when no argument is given and no cluster is detected (a single-process run).
    """
    explicit = coordinator_address is not None or num_processes is not None or process_id is not None
    if explicit:
        if coordinator_address is None or num_processes is None or process_id is None:
            raise ValueError("give all of coordinator_address, num_processes and process_id, or none of them")
        jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                                   process_id=process_id)
        return
    try:
        jax.distributed.initialize()
    except ValueError:
        # No cluster environment detected: one process.
        pass


def make_mesh(devices: list | None = None) -> Mesh:
    """A 1-D mesh with axis `data` over `devices` (default: every device of every process).

    Auto axis types: jax.make_mesh defaults to Explicit ones, under which an un-placed array in a
    jitted gradient raises a sharding type error.
    """
    devices = jax.devices() if devices is None else list(devices)
    return jax.make_mesh((len(devices),), (DATA_AXIS,), axis_types=(AxisType.Auto,), devices=devices)


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array (scalars, metrics)."""
    return NamedSharding(mesh, PartitionSpec())


def state_shardings(abstract_state, mesh: Mesh):
    """The sharding of every leaf of a train state (a pytree of arrays or ShapeDtypeStructs): replicated."""
    return jax.tree.map(lambda _: replicated(mesh), abstract_state)
