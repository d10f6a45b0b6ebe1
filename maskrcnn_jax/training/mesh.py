"""Where arrays live: the device mesh and the one place that decides how the train state and
batches are sharded.

Today the batch is split over the mesh's `data` axis and the train state is replicated; sharding
parameters over a second axis (FSDP) would change `state_shardings` only.
"""

import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from maskrcnn_jax.data.sharding import batch_sharding

DATA_AXIS = "data"

__all__ = ["DATA_AXIS", "batch_sharding", "make_mesh", "replicated", "state_shardings"]


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
