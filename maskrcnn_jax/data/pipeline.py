"""grain pipelines: host records -> fixed-shape batches, sharded per process, resumable.

Legend: B per-process batch, Hc Wc canvas, M max_instances, Sm cropped mask side.

Training: batches grouped by canvas (`grouping`: one canvas, or one per orientation): each epoch a
fresh global permutation (deterministic by seed), each global batch records of one canvas, every
record exactly once per epoch (a canvas's last batch completed with valid=False padding), this
process's slice of every global batch (`jax.process_index()` of `jax.process_count()`), random
transforms seeded by (seed, process, position), repeated forever. Batches are made before the
worker processes split the work, so the batch sequence does not depend on num_workers.
Evaluation: one pass in order (grouped by canvas when there are several), no augmentation, padded
to whole global batches with `valid=False` examples so every process runs the same number of steps.

Both return a `grain.IterDataset`; `iter(dataset)` gives a `grain.DatasetIterator` whose
`get_state()` / `set_state()` (or Orbax `grain.checkpoint.CheckpointSave/CheckpointRestore`)
resume exactly where it stopped. Save the state of the batches the trainer has consumed: batches
taken ahead of the step (a device prefetch queue) are lost on resume. Worker processes
(num_workers > 0) need absl flags parsed and the calling code under `if __name__ == "__main__"`.
Batch: {"image" uint8 [B,Hc,Wc,3] in training (float32 normalised in evaluation), "image_size" int32
[B,2], "original_size" int32 [B,2], "image_id" int64 [B], "gt_boxes" float32 [B,M,4], "gt_classes"
int32 [B,M], "gt_masks" uint8 [B,M,Sm,Sm], "gt_valid" bool [B,M], "valid" bool [B],
"dropped_degenerate" int32 [B], "dropped_overflow" int32 [B]} (see `transforms.transform_example`).
"""

from typing import Sequence

import grain
import jax
import numpy as np
from absl import logging

from maskrcnn_jax.data import grouping, transforms
from maskrcnn_jax.data.image_io import BrokenImageError


def _process_shard(shard_index: int | None, shard_count: int | None) -> tuple[int, int]:
    """(index, count) of this process's shard, defaulting to jax's process index and count."""
    index = jax.process_index() if shard_index is None else shard_index
    count = jax.process_count() if shard_count is None else shard_count
    if not 0 <= index < count:
        raise ValueError(f"shard_index {index} is not in [0, {count})")
    return index, count


def _per_process_batch_size(global_batch_size: int, shard_count: int) -> int:
    if global_batch_size % shard_count:
        raise ValueError(f"global batch {global_batch_size} does not split over {shard_count} processes")
    return global_batch_size // shard_count


def _read_options() -> grain.ReadOptions:
    # One thread per process (workers give the parallelism; more threads fight over the GIL) and a
    # buffer of one batch (the elements are batches): an example at a 1344 canvas is about 7 MB in
    # training, 23 MB in evaluation (float32), so memory stays bounded.
    return grain.ReadOptions(num_threads=1, prefetch_buffer_size=1)


def padding_example(*, canvas_size: tuple[int, int], max_instances: int, mask_size: int,
                    image_dtype=np.uint8) -> dict:
    """An all-zero example with valid=False, the shape of `transforms.transform_example`'s output."""
    return {
        "image": np.zeros((*canvas_size, 3), image_dtype),
        "image_size": np.array(canvas_size, np.int32),
        "original_size": np.array(canvas_size, np.int32),
        "image_id": np.int64(-1),
        "gt_boxes": np.zeros((max_instances, 4), np.float32),
        "gt_classes": np.zeros((max_instances,), np.int32),
        "gt_masks": np.zeros((max_instances, mask_size, mask_size), np.uint8),
        "gt_valid": np.zeros((max_instances,), bool),
        "valid": np.bool_(False),
        "dropped_degenerate": np.int32(0),
        "dropped_overflow": np.int32(0),
    }


class TrainingTransform(grain.transforms.RandomMap):
    """(record index, canvas index) -> augmented example on that canvas; the padding record
    (`grouping.PADDING_RECORD`) and a broken image (logged) give a padding example, valid=False, so
    that every batch keeps its size and its one canvas."""

    def __init__(self, source, *, canvases, min_size, max_size, max_instances, mask_size,
                 flip_probability, jitter_range, large_scale_jitter, min_box_size):
        self.source = source
        self.canvases = [tuple(canvas) for canvas in canvases]
        self.geometry_options = dict(min_size=min_size, max_size=max_size, jitter_range=tuple(jitter_range),
                                     large_scale_jitter=large_scale_jitter, flip_probability=flip_probability)
        self.example_options = dict(max_instances=max_instances, mask_size=mask_size, min_box_size=min_box_size)

    def random_map(self, element, rng: np.random.Generator):
        index, canvas_size = element[0], self.canvases[element[1]]
        if index == grouping.PADDING_RECORD:
            return self._padding(canvas_size)
        try:
            record = self.source[index]
        except BrokenImageError as error:
            logging.warning("record %d replaced by padding: %s", index, error)
            return self._padding(canvas_size)
        height, width = record["image"].shape[:2]
        geometry = transforms.training_geometry(rng, height, width, canvas_size=canvas_size, **self.geometry_options)
        return transforms.transform_example(record, geometry, canvas_size=canvas_size, **self.example_options)

    def _padding(self, canvas_size: tuple[int, int]) -> dict:
        return padding_example(canvas_size=canvas_size, max_instances=self.example_options["max_instances"],
                               mask_size=self.example_options["mask_size"])


class ScheduledRecord(grain.transforms.MapWithIndex):
    """Position in this process's endless example stream -> (record index, canvas index) from the
    epoch's `grouping.EpochBatches`: example k is slot k % B of this process's slice of batch k // B."""

    def __init__(self, schedule: grouping.EpochBatches, batch_size: int, shard_index: int):
        self.schedule = schedule
        self.batch_size = batch_size
        self.shard_index = shard_index

    def map_with_index(self, index: int, element) -> tuple[int, int]:
        del element
        epoch, position = divmod(index, self.schedule.batches_per_epoch * self.batch_size)
        batch, slot = divmod(position, self.batch_size)
        records, canvases = self.schedule.epoch(epoch)
        return int(records[batch, self.shard_index * self.batch_size + slot]), int(canvases[batch])


class EvaluationTransform(grain.transforms.Map):
    """(record index, canvas index) -> example at torchvision's resize on that canvas; the padding
    record and broken images give padding examples with valid=False (a broken image is logged)."""

    def __init__(self, source, *, canvases, min_size, max_size, max_instances, mask_size, min_box_size,
                 image_dtype):
        self.source = source
        self.canvases = [tuple(canvas) for canvas in canvases]
        self.min_size = min_size
        self.max_size = max_size
        self.example_options = dict(max_instances=max_instances, mask_size=mask_size, min_box_size=min_box_size,
                                    image_dtype=image_dtype)
        self.paddings = [padding_example(canvas_size=canvas, max_instances=max_instances, mask_size=mask_size,
                                         image_dtype=image_dtype) for canvas in self.canvases]

    def map(self, element):
        index, canvas = element
        if index == grouping.PADDING_RECORD:
            return self.paddings[canvas]
        try:
            record = self.source[index]
        except BrokenImageError as error:
            logging.warning("evaluation record %d replaced by padding: %s", index, error)
            return self.paddings[canvas]
        height, width = record["image"].shape[:2]
        geometry = transforms.evaluation_geometry(height, width, canvas_size=self.canvases[canvas],
                                                  min_size=self.min_size, max_size=self.max_size)
        return transforms.transform_example(record, geometry, canvas_size=self.canvases[canvas],
                                            **self.example_options)


def _with_workers(dataset: grain.IterDataset, num_workers: int, worker_buffer_size: int) -> grain.IterDataset:
    if num_workers == 0:
        return dataset
    return dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers,
                                                            per_worker_buffer_size=worker_buffer_size))


def training_dataset(source, *, global_batch_size: int, seed: int, canvases: Sequence[tuple[int, int]],
                     min_size: float, max_size: float, max_instances: int, mask_size: int = 112,
                     flip_probability: float = 0.5, jitter_range: tuple[float, float] = (1.0, 1.0),
                     large_scale_jitter: bool = False, min_box_size: float = 1.0, num_workers: int = 0,
                     worker_buffer_size: int = 1, shard_index: int | None = None,
                     shard_count: int | None = None) -> grain.IterDataset:
    """Endless shuffled, augmented batches of this process's shard (B = global_batch_size / processes),
    each on one of `canvases` (Hc, Wc), grouped as `grouping` describes; with several canvases the
    source needs `image_size(index) -> (H, W)` (CocoSource, TfdsSource have it)."""
    shard_index, shard_count = _process_shard(shard_index, shard_count)
    batch_size = _per_process_batch_size(global_batch_size, shard_count)
    if len(source) == 0:
        raise ValueError("no records to train on")
    canvases = [tuple(canvas) for canvas in canvases]
    schedule = grouping.EpochBatches(grouping.record_canvases(source, canvases), len(canvases), global_batch_size,
                                     seed)
    # Different processes must not share augmentation streams: fold the shard into the seed.
    transform_seed = int(np.random.SeedSequence([seed, shard_index]).generate_state(1)[0])
    examples = grain.MapDataset.range(schedule.batches_per_epoch * batch_size).repeat(None).map_with_index(
        ScheduledRecord(schedule, batch_size, shard_index)).random_map(
        TrainingTransform(source, canvases=canvases, min_size=min_size, max_size=max_size,
                          max_instances=max_instances, mask_size=mask_size,
                          flip_probability=flip_probability, jitter_range=jitter_range,
                          large_scale_jitter=large_scale_jitter, min_box_size=min_box_size),
        seed=transform_seed)
    # Batched before the workers split the work: a worker makes whole batches, each of one canvas.
    batches = examples.batch(batch_size, drop_remainder=True).to_iter_dataset(_read_options())
    return _with_workers(batches, num_workers, worker_buffer_size)


def evaluation_dataset(source, *, global_batch_size: int, canvas_size: tuple[int, int], min_size: float,
                       max_size: float, max_instances: int, mask_size: int = 112, min_box_size: float = 1.0,
                       image_dtype=np.float32, canvases: Sequence[tuple[int, int]] = (), num_workers: int = 0,
                       worker_buffer_size: int = 1, shard_index: int | None = None,
                       shard_count: int | None = None) -> grain.IterDataset:
    """One pass over every record, the same number of batches on every process.

    On one canvas (canvas_size; `canvases` empty) the records in order, cut into global batches, the
    last completed with valid=False examples; with several `canvases` (e.g. one per orientation, the
    source needs image_size(index)) the records grouped by canvas as `grouping` does for training,
    without shuffling: each batch one canvas, a canvas's last batch padded. Process p takes its
    slice of every global batch. image_dtype float32: images normalised on the host, unrounded
    (torchvision's input exactly: with uint8, the rounding to bytes moved a random-weight model's AP
    by 0.03 in tests/test_eval_torchvision_agreement.py); uint8: a quarter of the bytes, normalised
    on the device.
    """
    shard_index, shard_count = _process_shard(shard_index, shard_count)
    batch_size = _per_process_batch_size(global_batch_size, shard_count)
    canvases = [tuple(canvas) for canvas in canvases] or [tuple(canvas_size)]
    schedule = grouping.EpochBatches(grouping.record_canvases(source, canvases), len(canvases), global_batch_size,
                                     seed=0, shuffle=False)
    examples = grain.MapDataset.range(schedule.batches_per_epoch * batch_size).map_with_index(
        ScheduledRecord(schedule, batch_size, shard_index)).map(
        EvaluationTransform(source, canvases=canvases, min_size=min_size, max_size=max_size,
                            max_instances=max_instances, mask_size=mask_size, min_box_size=min_box_size,
                            image_dtype=image_dtype))
    batches = examples.batch(batch_size, drop_remainder=True).to_iter_dataset(_read_options())
    return _with_workers(batches, num_workers, worker_buffer_size)
