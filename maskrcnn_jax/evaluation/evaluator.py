"""COCO evaluation of a model over a dataset: jitted predict over fixed-shape batches; on the host,
each real detection's mask pasted within its box window, thresholded and RLE-encoded; scored with
COCOeval.

Shapes: B batch, Hc Wc the input canvas, D detections per image, S mask size (28).
"""

import collections
import dataclasses
import functools
import itertools
import json
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils
from jax.sharding import PartitionSpec

from maskrcnn_jax.data.sharding import global_batch
from maskrcnn_jax.detector import prediction_inputs
from maskrcnn_jax.evaluation.coco_metrics import CocoScores, evaluate_results
from maskrcnn_jax.evaluation.host_workers import ResultsEncoder

# Evaluations so far in this process: names each one's barrier (the coordination service wants
# unique names; every process counts alike, as all of them evaluate together).
_EVALUATIONS = itertools.count()
BARRIER_TIMEOUT_SECONDS = 3 * 3600  # one process may take much longer than another to post-process

# Seconds spent in each stage, the keys of the `timings` dicts below: "paste" and "rle" may run in
# worker processes, concurrent with the others ("wait": this process waiting for them); "gather":
# waiting for the other processes and collecting their results.
TIMING_STAGES = ("data", "model", "paste", "rle", "wait", "gather", "cocoeval")


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """What one evaluation scored: the scores, the COCO results and the evaluated image ids."""

    scores: CocoScores
    results: list
    image_ids: list


def _add_time(timings: dict, stage: str, start: float) -> float:
    """Adds the seconds since `start` to timings[stage]; returns now (the next stage's start)."""
    now = time.perf_counter()
    timings[stage] = timings.get(stage, 0.0) + now - start
    return now


def describe_run(devices_used: int, workers: int) -> str:
    """One line: this process among how many, the devices the model runs on, and where the host
    post-processing runs."""
    where = f"{workers} worker processes" if workers else "this process"
    return (f"evaluation: process {jax.process_index()} of {jax.process_count()}, model on {devices_used} of "
            f"{jax.device_count()} {jax.default_backend()} devices ({jax.local_device_count()} on this process), "
            f"mask paste and RLE in {where}")


def describe_timings(num_images: int, timings: dict, wall_seconds: float, workers: int) -> str:
    """The evaluation split of this process, one line per stage (TIMING_STAGES): seconds, ms per
    image, share of the wall time. With workers, paste and RLE are their seconds, concurrent with the model."""
    lines = [f"throughput: {num_images / wall_seconds:.2f} images/s ({wall_seconds:.2f} s for {num_images} images "
             f"on process {jax.process_index()})"]
    for stage in TIMING_STAGES:
        seconds = timings.get(stage, 0.0)
        note = f"  (in {workers} workers, concurrent)" if workers and stage in ("paste", "rle") else ""
        lines.append(f"  {stage:>8s}: {seconds:8.2f} s  {1000 * seconds / max(num_images, 1):8.1f} ms/image  "
                     f"{100 * seconds / wall_seconds:5.1f} %{note}")
    return "\n".join(lines)


def warm_up(predict_fn, params, batches, mesh=None, canvases=()) -> None:
    """Compiles predict on the first batch (split over `mesh` as `predict_coco_results` does), and
    on a blank batch of its shape for each other canvas (Hc, Wc) of `canvases` (the batches are
    grouped by canvas: one compile each), so that later timings are steady-state. Raises ValueError
    when there is no batch (no images, or none could be read)."""
    batch = next(iter(batches), None)
    if batch is None:
        raise ValueError("there is no image to evaluate: the annotation file lists none, or none could be read")
    inputs = prediction_inputs(batch)
    _predict_on_host(predict_fn, params, inputs, mesh)
    image = inputs["image"]
    for canvas in canvases:
        if tuple(canvas) != image.shape[1:3]:
            blank = np.zeros((image.shape[0], *canvas, image.shape[3]), image.dtype)
            _predict_on_host(predict_fn, params, {**inputs, "image": blank}, mesh)


def predict_coco_results(
    predict_fn,
    params,
    batches,
    label_to_category_id: dict,
    with_masks: bool = True,
    timings: dict | None = None,
    pool=None,
    mesh=None,
    batch_of_image: list | None = None,
) -> tuple:
    """Runs the model over `batches` and returns (COCO results list, list of evaluated image ids).

    predict_fn: jitted predict(params, batch {"image" [B,Hc,Wc,3], "image_size" int32 [B,2],
      "original_size" int32 [B,2]}) -> {"boxes" [B,D,4] xyxy original pixels, "scores" [B,D],
      "classes" [B,D] labels 1..K, "masks" [B,D,S,S] probabilities, "valid" [B,D]}
      (`maskrcnn_jax.detector.make_predict_fn`); it gets only those three keys of each batch.
    batches: iterable of dicts with "image" [B,Hc,Wc,3], "image_size" [B,2], "original_size" [B,2],
      "image_id" [B], "valid" [B] (False for the padding examples of the last batch).
    with_masks: also paste the masks (thresholded at 0.5, at the original size) for `segm`.
    timings: if given, seconds are added per stage: "data" (waiting for the next batch), "model"
      (predict and the copy of its outputs to the host), "paste" and "rle" (pasting each kept
      detection within its box; encoding and result dicts: summed over the worker processes when
      there are some, concurrent with the model), "wait" (waiting for the workers).
    pool: `host_workers.make_worker_pool(n)` to paste and encode in n worker processes while the
      model runs; None: in this process. Results come in the order of `batches` either way.
    mesh: split each batch over the mesh's "data" axis (params placed on it, e.g. replicated): every
      process passes its own batches (B a multiple of its devices on the axis), all in step, and gets
      the results of its own images. None: this process's default device.
    batch_of_image: if given, the position of each evaluated image's batch is appended to it.
    Detections whose label has no category in `label_to_category_id` are dropped (COCOeval would
    ignore them anyway: it scores only the ground truth's categories).
    """
    timings = {} if timings is None else timings
    known_labels = np.array(sorted(label_to_category_id))
    encoder = ResultsEncoder(pool, label_to_category_id, with_masks, timings)
    batch_iterator = iter(batches)
    for position in itertools.count():
        start = time.perf_counter()
        batch = next(batch_iterator, None)
        start = _add_time(timings, "data", start)
        if batch is None:
            break
        host = _predict_on_host(predict_fn, params, prediction_inputs(batch), mesh)
        _add_time(timings, "model", start)
        for b in np.flatnonzero(np.asarray(batch["valid"])):
            height, width = (int(v) for v in batch["original_size"][b])
            keep = np.asarray(host["valid"][b], dtype=bool) & np.isin(host["classes"][b], known_labels)
            detections = {key: host[key][b][keep] for key in ("boxes", "scores", "classes", "masks")}
            encoder.submit(int(batch["image_id"][b]), height, width, detections)
            if batch_of_image is not None:
                batch_of_image.append(position)
    return encoder.finish()


@functools.lru_cache(maxsize=8)
def per_device_predict(predict_fn, mesh):
    """predict_fn on each device of the mesh's "data" axis for its part of the batch (shard_map), the
    parameters replicated: each device computes exactly what one device alone computes for those
    images. (Left to jit's sharding propagation, the predict program gathers and reduces across
    devices, and its boxes differed from one device's in the 5th digit.) check_vma off: the NMS loops'
    carries would need casts to "varying" for the check, and nothing here is replicated. Cached: one
    compile per mesh."""
    return jax.jit(jax.shard_map(predict_fn, mesh=mesh, in_specs=(PartitionSpec(), PartitionSpec("data")),
                                 out_specs=PartitionSpec("data"), check_vma=False))


def _predict_on_host(predict_fn, params, inputs: dict, mesh) -> dict:
    """predict_fn's outputs for this process's batch `inputs`, as host numpy arrays [B, ...]."""
    if mesh is None:
        outputs = predict_fn(params, inputs)
    else:
        outputs = per_device_predict(predict_fn, mesh)(params, global_batch(inputs, mesh))
        outputs = multihost_utils.global_array_to_host_local_array(outputs, mesh, PartitionSpec("data"))
    return jax.device_get({key: outputs[key] for key in ("boxes", "scores", "classes", "valid", "masks")})


def gather_results(results: list, image_ids: list, batch_of_image: list) -> tuple[list, list]:
    """Every process's (results, image ids), on every process, in the order of the whole evaluation set.

    batch_of_image: the position of each image's batch. Process p's batch k is its slice of global
    batch k (`evaluation_dataset`), so the set's order is batch by batch, process by process within
    a batch. Every process calls it at once; it waits at
    a coordination-service barrier first, because the gather is a device collective and CPU (gloo)
    collectives give up after 30 s when one process is late.
    """
    barrier = f"evaluation {next(_EVALUATIONS)}: results ready"
    ocp.multihost.get_barrier_sync_fn()(key=barrier, timeout_ms=BARRIER_TIMEOUT_SECONDS * 1000)
    by_image = collections.defaultdict(list)
    for entry in results:
        by_image[entry["image_id"]].append(entry)
    payload = [[position, image_id, by_image[image_id]] for position, image_id in zip(batch_of_image, image_ids)]
    payload = np.frombuffer(json.dumps(payload).encode(), np.uint8)
    lengths = multihost_utils.process_allgather(np.array([len(payload)], np.int64)).reshape(-1)
    padded = np.zeros(int(lengths.max()), np.uint8)
    padded[:len(payload)] = payload
    gathered = multihost_utils.process_allgather(padded).reshape(len(lengths), -1)
    images = [(position, process, image_id, entries) for process, (row, length) in enumerate(zip(gathered, lengths))
              for position, image_id, entries in json.loads(row[:length].tobytes())]
    images.sort(key=lambda image: image[:2])  # stable: each process's images of a batch keep their order
    return [entry for *_, entries in images for entry in entries], [image_id for _, _, image_id, _ in images]


def score_model(
    predict_fn,
    params,
    batches,
    coco_gt,
    label_to_category_id: dict,
    with_masks: bool = True,
    timings: dict | None = None,
    pool=None,
    mesh=None,
    results_file=None,
) -> Evaluation | None:
    """COCO scores {"bbox", "segm"} of a model on the images in `batches`, with the results scored.

    See `predict_coco_results` for the arguments. Only the images in `batches` are scored, so a
    subset of `coco_gt` may be evaluated. A model that detects nothing scores 0. timings: if given,
    seconds are added per stage (TIMING_STAGES). pool: worker processes for the mask paste and RLE;
    mesh: the devices the batch is split over (`predict_coco_results`); results_file: where process
    0 writes the COCO results json scored, before scoring them.
    Several processes: each passes the batches of its own shard of the set and all call this at
    once; process 0 gathers every process's results, scores them once and returns them, the
    others return None. The scores are those of one process on one device.
    """
    timings = {} if timings is None else timings
    batch_of_image = []
    results, image_ids = predict_coco_results(predict_fn, params, batches, label_to_category_id, with_masks, timings,
                                              pool, mesh, batch_of_image)
    if jax.process_count() > 1:
        start = time.perf_counter()
        results, image_ids = gather_results(results, image_ids, batch_of_image)
        _add_time(timings, "gather", start)
        if jax.process_index() != 0:
            return None
    if results_file is not None:
        results_file = epath.Path(results_file)  # a local path or a URI (gs://)
        results_file.parent.mkdir(parents=True, exist_ok=True)
        results_file.write_text(json.dumps(results))
    start = time.perf_counter()
    iou_types = ("bbox", "segm") if with_masks else ("bbox",)
    scores = evaluate_results(coco_gt, results, iou_types=iou_types, image_ids=image_ids)
    _add_time(timings, "cocoeval", start)
    return Evaluation(scores, results, image_ids)


def evaluate_model(*args, **kwargs) -> dict | None:
    """The metrics {"bbox": {AP, AP50, ...}, "segm": {...}} of `score_model` (same arguments) on
    process 0, None on the others."""
    evaluation = score_model(*args, **kwargs)
    return None if evaluation is None else evaluation.scores.metrics
