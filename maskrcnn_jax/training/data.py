"""The trainer's data, from config.data: the record sources and the endless iterator of training
batches. (The model's class slots for their labels: `evaluation.class_slots`, shared with the scoring.)

config.data.source picks where records come from:
  "shapes"  synthetic shapes, written into WORKDIR/shapes/{train,eval} on first use (config.data.shapes);
            with a gs:// workdir into a local cache instead (`shapes_directory`)
  "coco"    COCO json + image folders (train_annotations/train_images, eval_annotations/eval_images)
  "tfds"    a TFDS dataset written by scripts/build_tfds.py (tfds_data_dir, tfds_train_split); no evaluation
"""

import dataclasses
import os
import pathlib
import shutil
import uuid

import grain
import ml_collections

from maskrcnn_jax.data import CocoSource, training_dataset
from maskrcnn_jax.data import shapes
from maskrcnn_jax.storage import is_uri
from maskrcnn_jax.training.setup import training_canvases

SOURCES = ("shapes", "coco", "tfds")


@dataclasses.dataclass(frozen=True)
class EvaluationData:
    """What the evaluation needs: the records and the COCO json that scores them."""

    source: CocoSource
    annotation_file: pathlib.Path


def ensure_shapes_dataset(directory: str | os.PathLike, *, num_images: int, seed: int,
                          image_size: tuple[int, int], max_shapes: int) -> pathlib.Path:
    """The annotation json of a shapes dataset in `directory`, written there first if absent.

    Written into a private temporary folder and renamed into place, so processes sharing the
    workdir never read a half-written dataset (the loser of the rename drops its copy).
    """
    directory = pathlib.Path(directory)
    annotation_file = directory / "annotations.json"
    if annotation_file.is_file():
        return annotation_file
    staging = directory.with_name(f"{directory.name}.tmp-{uuid.uuid4().hex}")
    shapes.write_shapes_dataset(staging, num_images, seed=seed, min_size=image_size[0], max_size=image_size[-1],
                                max_shapes=max_shapes)
    try:
        os.rename(staging, directory)
    except OSError:
        if not annotation_file.is_file():
            raise
        shutil.rmtree(staging, ignore_errors=True)
    return annotation_file


def shapes_directory(workdir: str | os.PathLike, split: str, *, num_images: int, seed: int,
                     image_size: tuple[int, int], max_shapes: int) -> pathlib.Path:
    """Where a shapes split lives: WORKDIR/shapes/<split>, or for a URI workdir (gs://) a folder of
    the local cache ($XDG_CACHE_HOME or ~/.cache, maskrcnn_jax/shapes/) named by every value that
    fixes its content. The image loader reads local files, and the set is cheap to generate again
    and the same on every host, so it is not worth uploading."""
    if not is_uri(workdir):
        return pathlib.Path(workdir) / "shapes" / split
    cache = pathlib.Path(os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache")
    size = "x".join(str(side) for side in image_size)
    return cache / "maskrcnn_jax" / "shapes" / f"{split}-{num_images}images-seed{seed}-size{size}-max{max_shapes}"


def _shapes_split(config: ml_collections.ConfigDict, workdir, split: str, num_images: int) -> pathlib.Path:
    options = config.data.shapes
    # Different seeds keep the evaluation images out of the training set.
    seed = options.seed if split == "train" else options.seed + 1
    values = dict(num_images=num_images, seed=seed, image_size=tuple(options.image_size),
                  max_shapes=options.max_shapes)
    return ensure_shapes_dataset(shapes_directory(workdir, split, **values), **values)


def training_source(config: ml_collections.ConfigDict, workdir: str | os.PathLike):
    """The training records (CocoSource or TfdsSource; images without instances left out)."""
    data = config.data
    if data.source == "shapes":
        annotation_file = _shapes_split(config, workdir, "train", data.shapes.num_train_images)
        return CocoSource(annotation_file, annotation_file.parent / "images", skip_images_without_annotations=True)
    if data.source == "coco":
        return CocoSource(data.train_annotations, data.train_images, skip_images_without_annotations=True)
    if data.source == "tfds":
        from maskrcnn_jax.data.tfds_source import TfdsSource  # tensorflow_datasets is slow to import

        return TfdsSource(data.tfds_data_dir, data.tfds_train_split, skip_images_without_annotations=True)
    raise ValueError(f"config.data.source {data.source!r} is not one of {SOURCES}")


def evaluation_data(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> EvaluationData | None:
    """The evaluation records and their COCO json, or None where the source has none (tfds, or no
    config.data.eval_annotations)."""
    data = config.data
    if data.source == "shapes":
        annotation_file = _shapes_split(config, workdir, "eval", data.shapes.num_eval_images)
        return EvaluationData(CocoSource(annotation_file, annotation_file.parent / "images"), annotation_file)
    if data.source == "coco" and data.eval_annotations:
        return EvaluationData(CocoSource(data.eval_annotations, data.eval_images), pathlib.Path(data.eval_annotations))
    return None


def training_iterator(config: ml_collections.ConfigDict, source, shard_index: int | None = None,
                      shard_count: int | None = None) -> grain.DatasetIterator:
    """Endless batches of this process's shard (per-process batch = global batch / process count),
    each on one of the canvases of `setup.training_canvases(config)`, grouped by it. shard_index /
    shard_count: another process's batches (default this process's, `jax.process_index()` of
    `jax.process_count()`), e.g. to read again what each process of a run trained on."""
    data = config.data
    dataset = training_dataset(
        source,
        global_batch_size=config.train.global_batch_size,
        seed=config.train.seed,
        canvases=training_canvases(config),
        min_size=config.input.min_size,
        max_size=config.input.max_size,
        max_instances=data.max_instances,
        mask_size=data.mask_size,
        flip_probability=data.flip_probability,
        jitter_range=tuple(data.jitter_range),
        large_scale_jitter=data.large_scale_jitter,
        num_workers=data.num_workers,
        shard_index=shard_index,
        shard_count=shard_count,
    )
    return iter(dataset)
