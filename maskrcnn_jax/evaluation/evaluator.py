"""COCO evaluation of a model over a dataset: jitted predict over fixed-shape batches; on the host,
each real detection's mask pasted within its box window, thresholded and RLE-encoded; scored with
COCOeval.

Shapes: B batch, Hc Wc the input canvas, D detections per image, S mask size (28).
"""

import time

import grain
import jax
import numpy as np

from maskrcnn_jax.data.pipeline import evaluation_dataset
from maskrcnn_jax.detector import prediction_inputs
from maskrcnn_jax.evaluation.coco_metrics import evaluate_results
from maskrcnn_jax.evaluation.host_workers import ResultsEncoder

# Seconds spent in each stage, the keys of the `timings` dicts below: "paste" and "rle" may run in
# worker processes, concurrent with the others ("wait": this process waiting for them).
TIMING_STAGES = ("data", "model", "paste", "rle", "wait", "cocoeval")


def model_label_to_category_id(num_model_classes: int, dataset_label_to_category_id: dict) -> dict:
    """Which dataset category each label of the model's class head stands for.

    A head with one slot per dataset class (num_model_classes = K + 1) uses the dataset's contiguous
    labels. A 91-slot head on a COCO-numbered dataset is torchvision's COCO head, where label i is
    category id i; only the slots whose id the dataset has are mapped.
    """
    if num_model_classes == len(dataset_label_to_category_id) + 1:
        return dict(dataset_label_to_category_id)
    category_ids = set(dataset_label_to_category_id.values())
    if num_model_classes == 91 and category_ids <= set(range(1, 91)):
        return {category_id: category_id for category_id in sorted(category_ids)}
    raise ValueError(
        f"the model has {num_model_classes} class slots but the dataset {len(category_ids)} categories "
        f"(ids {sorted(category_ids)[:10]}...): no label mapping fits"
    )


def evaluation_batches(
    source,
    coco_gt,
    *,
    batch_size: int,
    canvas_size: tuple[int, int],
    min_size: int,
    max_size: int,
    max_images: int | None = None,
):
    """(grain dataset of fixed-shape evaluation batches, number of images) over `source` (or its first
    max_images). Batches carry the predict schema ("image", "image_size", "original_size") plus
    "image_id" and "valid"; canvas_size, min_size and max_size as config.input."""
    if max_images is not None:
        source = grain.MapDataset.source(source)[:max_images]
    # COCOeval reads the GT from the annotation file, but the pipeline pads it too: room for every
    # instance means none is dropped (and logged as dropped).
    max_instances = max([len(annotations) for annotations in coco_gt.imgToAnns.values()] + [1])
    dataset = evaluation_dataset(
        source,
        global_batch_size=batch_size,
        canvas_size=tuple(canvas_size),
        min_size=min_size,
        max_size=max_size,
        max_instances=max_instances,
    )
    return dataset, len(source)


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


def warm_up(predict_fn, params, batches) -> None:
    """Compiles predict on the first batch, so that later timings are steady-state. Raises ValueError
    when there is no batch (no images, or none could be read)."""
    batch = next(iter(batches), None)
    if batch is None:
        raise ValueError("there is no image to evaluate: the annotation file lists none, or none could be read")
    jax.block_until_ready(predict_fn(params, prediction_inputs(batch)))


def predict_coco_results(
    predict_fn,
    params,
    batches,
    label_to_category_id: dict,
    with_masks: bool = True,
    timings: dict | None = None,
    pool=None,
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
    Detections whose label has no category in `label_to_category_id` are dropped (COCOeval would
    ignore them anyway: it scores only the ground truth's categories).
    """
    timings = {} if timings is None else timings
    known_labels = np.array(sorted(label_to_category_id))
    encoder = ResultsEncoder(pool, label_to_category_id, with_masks, timings)
    batch_iterator = iter(batches)
    while True:
        start = time.perf_counter()
        batch = next(batch_iterator, None)
        start = _add_time(timings, "data", start)
        if batch is None:
            break
        predictions = predict_fn(params, prediction_inputs(batch))
        host = jax.device_get({k: predictions[k] for k in ("boxes", "scores", "classes", "valid", "masks")})
        _add_time(timings, "model", start)
        for b in np.flatnonzero(np.asarray(batch["valid"])):
            height, width = (int(v) for v in batch["original_size"][b])
            keep = np.asarray(host["valid"][b], dtype=bool) & np.isin(host["classes"][b], known_labels)
            detections = {key: host[key][b][keep] for key in ("boxes", "scores", "classes", "masks")}
            encoder.submit(int(batch["image_id"][b]), height, width, detections)
    return encoder.finish()


def evaluate_model(
    predict_fn,
    params,
    batches,
    coco_gt,
    label_to_category_id: dict,
    with_masks: bool = True,
    timings: dict | None = None,
    pool=None,
) -> dict:
    """COCO metrics {"bbox": {AP, AP50, ...}, "segm": {...}} of a model on the images in `batches`.

    A plain function for the trainer to call every N steps (see `predict_coco_results` for the
    arguments). Only the images in `batches` are scored, so a subset of `coco_gt` may be evaluated.
    A model that detects nothing scores 0. timings: if given, seconds are added per stage (TIMING_STAGES).
    pool: worker processes for the mask paste and RLE (`predict_coco_results`).
    One process: with several, each would score only its own shard of images (the batches and
    predictions must be host-local arrays); gathering results across processes is not done here.
    """
    timings = {} if timings is None else timings
    results, image_ids = predict_coco_results(predict_fn, params, batches, label_to_category_id, with_masks, timings,
                                              pool)
    start = time.perf_counter()
    iou_types = ("bbox", "segm") if with_masks else ("bbox",)
    scores = evaluate_results(coco_gt, results, iou_types=iou_types, image_ids=image_ids)
    timings["cocoeval"] = timings.get("cocoeval", 0.0) + time.perf_counter() - start
    return scores.metrics
