"""A per-row function applied only where there is work: rows in fixed chunks, chunks without a valid
row skipped.

The training step runs the mask head on fixed slots (`targets.mask_slots`: 128 per image, positive
RoIs first), but an image often has far fewer positives (24 and 30 of 128 in benchmarks/benchmark.py's
training batch), and the mask head was most of the step's FLOP (docs/benchmarks.md, stage profile).
With `lax.cond` per chunk, XLA runs the head only on chunks holding a positive, forward and
backward; the skipped rows are zeros, which the loss masks anyway, so losses and gradients equal
those of the head on every slot.

Chunks are taken along the slots of every image at once (chunk j = slots j C .. j C + C - 1 of each
image), so a batch sharded over devices stays sharded and all devices take the same branch.

Legend: B batch, N rows per image (a multiple of the chunk size C).
"""

from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax


def map_valid_chunks(fn: Callable, inputs, valid: jax.Array, chunk_size: int) -> jax.Array:
    """fn on inputs (an array or a tuple of arrays, each [B, N, ...]) chunk by chunk (each [B, C, ...]
    -> [B, C, ...]), zeros for the chunks whose rows are invalid in every image.

    valid: bool [B, N]. fn must compute each row from that row alone (a per-RoI head without batch
    statistics): then every valid row's output equals fn(inputs)'s. Returns [B, N, ...].
    """
    batch, num_rows = valid.shape
    if num_rows % chunk_size:
        raise ValueError(f"{num_rows} rows do not split into chunks of {chunk_size}")
    num_chunks = num_rows // chunk_size
    chunks = jax.tree.map(
        lambda x: jnp.swapaxes(x.reshape(batch, num_chunks, chunk_size, *x.shape[2:]), 0, 1), inputs)
    chunk_has_work = jnp.any(valid.reshape(batch, num_chunks, chunk_size), axis=(0, 2))
    output = jax.eval_shape(fn, jax.tree.map(lambda x: x[0], chunks))

    def skip(_):
        return jnp.zeros(output.shape, output.dtype)

    outputs = lax.map(lambda args: lax.cond(args[1], fn, skip, args[0]), (chunks, chunk_has_work))
    return jnp.swapaxes(outputs, 0, 1).reshape(batch, num_rows, *outputs.shape[3:])
