"""Each evaluated image's kept detections turned into COCO results entries (mask paste, threshold,
RLE), in this process or in a pool of worker processes that runs while the model predicts the next
batch.

The MLPerf TPU Mask R-CNN keeps a pod's evaluation within seconds with 50 such workers per host;
one core pastes and encodes about 100 images of 100 detections per second here (docs/benchmarks.md).
"""

import collections
import concurrent.futures
import multiprocessing
import os
import time

import jax

from maskrcnn_jax.evaluation.coco_results import image_results

MAX_WORKERS = 32
# How far the model may run ahead of the workers, in images (memory: about 0.3 MB each at 100 detections).
MAX_PENDING_IMAGES = 256


def default_host_workers() -> int:
    """Worker processes for the host post-processing: none where JAX runs on the CPU (XLA's model
    already uses every core, workers would only compete with it); elsewhere one per core but one,
    at most MAX_WORKERS."""
    if jax.default_backend() == "cpu":
        return 0
    return max(0, min((os.cpu_count() or 1) - 1, MAX_WORKERS))


def make_worker_pool(workers: int) -> concurrent.futures.ProcessPoolExecutor | None:
    """A pool of `workers` processes (None for 0: encode in this process), started now so that
    their imports overlap the model's compilation. Spawned, not forked: JAX is multithreaded."""
    if workers <= 0:
        return None
    pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    for _ in range(workers):
        pool.submit(int)  # starts a worker (it imports this module's dependencies on its first task)
    return pool


class ResultsEncoder:
    """Collects COCO results entries image by image, in submission order, encoding in `pool`
    (or here when None). timings gets "paste" and "rle" (seconds spent in them, by whichever
    process) and "wait" (this process waiting for the workers)."""

    def __init__(self, pool, label_to_category_id: dict, with_masks: bool, timings: dict):
        self.pool, self.label_to_category_id, self.with_masks = pool, label_to_category_id, with_masks
        self.timings = timings
        self.pending = collections.deque()
        self.results, self.image_ids = [], []

    def submit(self, image_id: int, height: int, width: int, detections: dict) -> None:
        """detections: the kept detections of one image (`coco_results.image_results`)."""
        arguments = (image_id, height, width, detections, self.label_to_category_id, self.with_masks)
        if self.pool is None:
            self._add(image_id, image_results(*arguments))
            return
        self.pending.append((image_id, self.pool.submit(image_results, *arguments)))
        while len(self.pending) > MAX_PENDING_IMAGES:
            self._collect_oldest()

    def finish(self) -> tuple[list, list]:
        """(COCO results entries, image ids) of every image submitted, in submission order."""
        while self.pending:
            self._collect_oldest()
        return self.results, self.image_ids

    def _collect_oldest(self) -> None:
        image_id, future = self.pending.popleft()
        start = time.perf_counter()
        outcome = future.result()
        self.timings["wait"] = self.timings.get("wait", 0.0) + time.perf_counter() - start
        self._add(image_id, outcome)

    def _add(self, image_id: int, outcome: tuple) -> None:
        entries, paste_seconds, rle_seconds = outcome
        self.results.extend(entries)
        self.image_ids.append(image_id)
        self.timings["paste"] = self.timings.get("paste", 0.0) + paste_seconds
        self.timings["rle"] = self.timings.get("rle", 0.0) + rle_seconds
