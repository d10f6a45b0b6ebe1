"""Greedy non-maximum suppression with static shapes, for one image.

Shape legend: N candidate boxes, D = max_output kept boxes.

The candidates are sorted by score once and visited in tiles of `tile_size` boxes (the sorted,
blocked scheme of the TPU Mask R-CNN). A tile is first checked against the boxes kept so far,
chunk by chunk, only as far as the kept count reaches; then the greedy order inside the tile is
resolved by a fixed-point iteration on its [T, T] overlap matrix. Work grows with
N x kept rather than N^2, the loop stops as soon as D boxes are kept or only padding is left, and
the largest intermediate is [T, T] (no [N, N] matrix). On CPU this is faster than
torchvision.ops.nms (docs/benchmarks.md).

Ties in score are broken by lower index first; the result is still an exact greedy NMS in that order.
"""

import jax
import jax.numpy as jnp

from maskrcnn_jax.ops.boxes import box_iou

DEFAULT_TILE_SIZE = 256


def nms(boxes, scores, valid, iou_threshold, max_output, *, tile_size=DEFAULT_TILE_SIZE):
    """torchvision.ops.nms with padding: boxes [N, 4], scores [N], valid bool [N] -> (int32 [D], bool [D]).

    Returns the indices of the kept boxes in descending score order (equal scores: lower index
    first), exactly torchvision's kept list when scores have no ties. A box is dropped when its IoU
    with a kept, higher-ranked box is > iou_threshold. Invalid inputs are never kept. Output slots
    past the kept count have valid False and index 0. max_output and tile_size are static.
    """
    classes = jnp.zeros(boxes.shape[0], jnp.int32)
    return _sorted_tiled_nms(boxes, scores, classes, valid, iou_threshold, max_output, tile_size)


def batched_nms(boxes, scores, classes, valid, iou_threshold, max_output, *, tile_size=DEFAULT_TILE_SIZE):
    """Class-aware NMS, torchvision.ops.batched_nms semantics: boxes of different classes never
    suppress each other. boxes [N, 4], scores [N], classes int [N], valid bool [N] -> (int32 [D], bool [D]).

    The class test is part of the overlap test, so unlike torchvision's coordinate-offset trick
    it has no float32 rounding from large offsets. Output as nms().
    """
    return _sorted_tiled_nms(boxes, scores, classes, valid, iou_threshold, max_output, tile_size)


def _round_up(value, multiple):
    return -(-value // multiple) * multiple


def _sorted_tiled_nms(boxes, scores, classes, valid, iou_threshold, max_output, tile_size):
    num_boxes = boxes.shape[0]
    if num_boxes == 0:
        return jnp.zeros(max_output, jnp.int32), jnp.zeros(max_output, bool)
    tile = min(tile_size, num_boxes)
    padded = _round_up(num_boxes, tile)
    num_tiles = padded // tile
    capacity = _round_up(max_output, tile)

    # Invalid boxes sort last; the stable sort puts lower indices first among equal scores.
    order = jnp.argsort(jnp.where(valid, -scores, jnp.inf), stable=True).astype(jnp.int32)
    pad = padded - num_boxes
    tiled_boxes = jnp.pad(boxes[order], ((0, pad), (0, 0))).reshape(num_tiles, tile, 4)
    tiled_classes = jnp.pad(classes[order], (0, pad)).reshape(num_tiles, tile)
    tiled_valid = jnp.pad(valid[order], (0, pad)).reshape(num_tiles, tile)
    tiled_order = jnp.pad(order, (0, pad)).reshape(num_tiles, tile)
    earlier = jnp.arange(tile)[:, None] < jnp.arange(tile)[None, :]

    def overlaps(boxes_a, classes_a, boxes_b, classes_b):
        same_class = classes_a[:, None] == classes_b[None, :]
        return (box_iou(boxes_a, boxes_b) > iou_threshold) & same_class

    def suppressed_by_kept(tile_boxes, tile_classes, kept_boxes, kept_classes, kept_count):
        # Unused buffer slots are zero boxes (IoU 0), but stopping at kept_count saves the work.
        def more_chunks(state):
            chunk, _ = state
            return chunk * tile < kept_count

        def check_chunk(state):
            chunk, suppressed = state
            chunk_boxes = jax.lax.dynamic_slice_in_dim(kept_boxes, chunk * tile, tile)
            chunk_classes = jax.lax.dynamic_slice_in_dim(kept_classes, chunk * tile, tile)
            hits = overlaps(tile_boxes, tile_classes, chunk_boxes, chunk_classes).any(axis=1)
            return chunk + 1, suppressed | hits

        _, suppressed = jax.lax.while_loop(more_chunks, check_chunk, (0, jnp.zeros(tile, bool)))
        return suppressed

    def greedy_within_tile(candidates, tile_overlaps):
        # keep[j] = candidate[j] and no kept i < j overlaps j. Iterating this map fixes one more
        # leading position per step, so its first repeat is the unique greedy solution.
        def changed(state):
            return state[1]

        def step(state):
            keep, _ = state
            new_keep = candidates & ~(tile_overlaps & keep[:, None]).any(axis=0)
            return new_keep, (new_keep != keep).any()

        keep, _ = jax.lax.while_loop(changed, step, (candidates, jnp.array(True)))
        return keep

    def tiles_left(state):
        tile_index, kept_count = state[0], state[1]
        first_valid = tiled_valid[jnp.minimum(tile_index, num_tiles - 1), 0]
        return (tile_index < num_tiles) & (kept_count < max_output) & first_valid

    def process_tile(state):
        tile_index, kept_count, kept_boxes, kept_classes, kept_indices = state
        tile_boxes = tiled_boxes[tile_index]
        tile_classes = tiled_classes[tile_index]
        candidates = tiled_valid[tile_index] & ~suppressed_by_kept(
            tile_boxes, tile_classes, kept_boxes, kept_classes, kept_count
        )
        tile_overlaps = overlaps(tile_boxes, tile_classes, tile_boxes, tile_classes) & earlier
        keep = greedy_within_tile(candidates, tile_overlaps)
        slots = jnp.where(keep, kept_count + jnp.cumsum(keep) - 1, capacity)
        kept_boxes = kept_boxes.at[slots].set(tile_boxes, mode="drop")
        kept_classes = kept_classes.at[slots].set(tile_classes, mode="drop")
        kept_indices = kept_indices.at[slots].set(tiled_order[tile_index], mode="drop")
        return tile_index + 1, kept_count + keep.sum(), kept_boxes, kept_classes, kept_indices

    initial = (
        0,
        jnp.array(0, jnp.int32),
        jnp.zeros((capacity, 4), boxes.dtype),
        jnp.zeros(capacity, classes.dtype),
        jnp.zeros(capacity, jnp.int32),
    )
    _, kept_count, _, _, kept_indices = jax.lax.while_loop(tiles_left, process_tile, initial)
    output_valid = jnp.arange(max_output) < kept_count
    return jnp.where(output_valid, kept_indices[:max_output], 0), output_valid
