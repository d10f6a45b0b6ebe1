"""Host batches -> global `jax.Array`s split over the data axis of a device mesh.

Legend: B per-process batch, G = B * process count global batch.
Every process calls `global_batch` with its own B examples in the same step; the result is one
global array per key with leading dimension G, sharded over `data_axis` and replicated over the
other mesh axes.
"""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def batch_sharding(mesh: Mesh, data_axis: str = "data") -> NamedSharding:
    """Leading (batch) dimension split over `data_axis`, every other dimension whole."""
    return NamedSharding(mesh, PartitionSpec(data_axis))


def global_batch(host_batch: dict[str, np.ndarray], mesh: Mesh, data_axis: str = "data") -> dict[str, jax.Array]:
    """Places this process's batch as its part of global arrays.

    Args: host_batch {key: numpy [B, ...]}; B must be a multiple of the data-axis devices this
      process holds.
    Returns: {key: jax.Array [G, ...]} with `batch_sharding(mesh, data_axis)`; int64 arrays become
      int32 when jax_enable_x64 is off (the default).
    """
    sharding = batch_sharding(mesh, data_axis)
    return {key: jax.make_array_from_process_local_data(sharding, _device_dtype(key, np.asarray(value)))
            for key, value in host_batch.items()}


def _device_dtype(key: str, value: np.ndarray) -> np.ndarray:
    """int64 (e.g. image_id) becomes int32 unless jax_enable_x64, checked so ids never wrap silently."""
    if value.dtype != np.int64 or jax.config.jax_enable_x64:
        return value
    if value.size and (value.min() < np.iinfo(np.int32).min or value.max() > np.iinfo(np.int32).max):
        raise ValueError(f"{key} holds values beyond int32; enable jax_enable_x64 to place it")
    return value.astype(np.int32)
