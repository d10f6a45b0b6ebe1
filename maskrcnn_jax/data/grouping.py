"""Training batches grouped by canvas: which records make up each global batch of each epoch.

Legend: N records, G global batch, C canvases (Hc, Wc), E batches per epoch.

COCO photos are about 4:3, landscape or portrait: on one square canvas an 800x1333 photo is 40%
padding. With a canvas per orientation (e.g. 800x1344 and 1344x800) every record goes to the canvas
whose aspect ratio is nearest its own, and each global batch holds records of one canvas only, so
the trainer runs one compiled step per canvas (MLPerf's TPU Mask R-CNN groups by orientation;
torchvision's reference scripts by aspect ratio).

Epoch e: a permutation of all N records (numpy's PCG64 seeded by (seed, e): the same on every
process and platform), split by canvas keeping that order, each canvas's records cut into global
batches, the last one of each canvas completed with -1 (padding examples, valid=False), and the
batches of all canvases in a random order of the same generator. Every record is in exactly one
batch per epoch, and E = sum over canvases of ceil(records of the canvas / G) is the same every
epoch. Process p of P takes columns [p * G / P, (p + 1) * G / P) of each batch. Evaluation uses
the same cut without shuffling: records in order, the batches of the first canvas first.
"""

import math
from typing import Sequence

import numpy as np

PADDING_RECORD = -1


def canvas_index(height: int, width: int, canvases: Sequence[tuple[int, int]]) -> int:
    """The canvas whose aspect ratio (W / H) is nearest the image's, on a log scale; ties go to the first."""
    aspect = math.log(width / height)
    return min(range(len(canvases)), key=lambda index: abs(aspect - math.log(canvases[index][1] / canvases[index][0])))


def record_canvases(source, canvases: Sequence[tuple[int, int]]) -> np.ndarray:
    """int32 [N]: the canvas of each record, from `source.image_size(index)` -> (H, W) (read without
    decoding); with one canvas every record's is 0 and the source needs no image_size."""
    if len(canvases) == 1:
        return np.zeros(len(source), np.int32)
    return np.array([canvas_index(*source.image_size(index), canvases) for index in range(len(source))], np.int32)


class EpochBatches:
    """The grouped schedule of the module docstring: `epoch(e)` -> (records int64 [E, G], -1 for
    padding; canvas index int32 [E]); shuffle False: every epoch in record order. Picklable (grain
    workers build it once each); the last epoch asked for is kept, as consecutive examples ask for it."""

    def __init__(self, record_canvases: np.ndarray, num_canvases: int, global_batch_size: int, seed: int,
                 shuffle: bool = True):
        self.record_canvases = np.asarray(record_canvases, np.int32)
        self.num_canvases = num_canvases
        self.global_batch_size = global_batch_size
        self.seed = seed
        self.shuffle = shuffle
        counts = np.bincount(self.record_canvases, minlength=num_canvases)
        self.batches_per_epoch = int(np.sum(-(-counts // global_batch_size)))
        self._last = (None, None)

    def epoch(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        if self._last[0] == epoch:
            return self._last[1]
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.record_canvases)) if self.shuffle else np.arange(len(self.record_canvases))
        records, canvases = [], []
        for canvas in range(self.num_canvases):
            members = order[self.record_canvases[order] == canvas]
            padded = np.full(-(-len(members) // self.global_batch_size) * self.global_batch_size, PADDING_RECORD,
                             np.int64)
            padded[:len(members)] = members
            records.append(padded.reshape(-1, self.global_batch_size))
            canvases.append(np.full(len(records[-1]), canvas, np.int32))
        batch_order = rng.permutation(self.batches_per_epoch) if self.shuffle else np.arange(self.batches_per_epoch)
        schedule = (np.concatenate(records)[batch_order], np.concatenate(canvases)[batch_order])
        self._last = (epoch, schedule)
        return schedule
