"""COCO instances json + image folder as a random-access record source (works as a grain data source).

Records (numpy), one per image:
  {"image_id": int, "file_name": str, "image": uint8 [H, W, 3] RGB (EXIF-oriented),
   "boxes": float32 [N, 4] xyxy original pixels, "labels": int32 [N] contiguous 1..K (0 is background),
   "masks": uint8 [N, H, W] full-image binary masks}
N is the number of training instances of the image (crowd and skipped annotations excluded). Each
box is the pixel box of its mask, so boxes and masks always agree; the file's bbox is only checked.
Every instance is kept: padding to max_instances is the pipeline's job.

Defined behaviour on bad input:
  - A broken annotation file raises `DatasetFileError` in the constructor (message names file and problem).
  - Polygon coordinates outside the image are clipped by rasterisation; an annotation with no pixel
    left, a zero-area or inverted bbox, a polygon of fewer than 3 points, an unknown image or
    category id: each such annotation is skipped when the source is built and counted per reason in `skipped`
    (keys: `validation.SKIP_REASONS`); crowd annotations are counted in `num_crowd`: they are not
    training targets (as in torchvision) but stay in the annotation file that COCO evaluation reads.
  - A missing, corrupt or wrong-sized image makes `source[i]` raise `image_io.BrokenImageError`
    (with `.path` and `.reason`); the loading pipeline catches it, logs the path and skips the image.
"""

import collections
import dataclasses
import os
import pathlib

import numpy as np
from pycocotools import mask as mask_utils

from maskrcnn_jax.data import image_io
from maskrcnn_jax.data import validation


@dataclasses.dataclass(frozen=True)
class ImageEntry:
    """One image and its checked training instances (N of them).

    rles holds pycocotools compressed RLE counts of [height, width] masks, compact to keep and pickle.
    """

    image_id: int
    file_name: str
    height: int
    width: int
    boxes: np.ndarray  # float32 [N, 4] xyxy pixel box of each mask
    labels: np.ndarray  # int32 [N], contiguous 1..K
    rles: tuple[bytes, ...]  # [N]


@dataclasses.dataclass(frozen=True)
class CocoAnnotations:
    """A checked COCO instances file: per-image entries, label mapping and what was left out and why."""

    images: tuple[ImageEntry, ...]  # in the file's order, every image of 'images'
    label_to_category_id: dict[int, int]  # contiguous label 1..K -> dataset category id
    class_names: tuple[str, ...]  # [K + 1], index 0 is "__background__"
    skipped: collections.Counter  # reason key (validation.SKIP_REASONS) -> number of annotations
    num_crowd: int  # crowd annotations: not training targets, kept in the file for evaluation
    background_category_ids: tuple[int, ...]  # categories named '_background_', which get no label
    duplicate_annotation_ids: dict[int, int] = dataclasses.field(default_factory=dict)  # id -> times used


def read_coco_annotations(annotation_file: str | os.PathLike) -> CocoAnnotations:
    """Reads and checks a COCO instances json; raises `validation.DatasetFileError` when the file is unusable.

    Labels are contiguous in the order of category id: the smallest id becomes label 1. A category
    named '_background_' (labelme's COCO export adds one with id 0) gets no label.
    """
    dataset = validation.load_coco_json(annotation_file)
    categories = sorted(
        (c for c in dataset["categories"] if c["name"] != validation.BACKGROUND_CATEGORY_NAME), key=lambda c: c["id"])
    category_to_label = {c["id"]: label for label, c in enumerate(categories, start=1)}
    background_ids = {c["id"] for c in dataset["categories"] if c["name"] == validation.BACKGROUND_CATEGORY_NAME}
    images_by_id = {image["id"]: image for image in dataset["images"]}

    skipped = collections.Counter()
    num_crowd = 0
    instances_by_image = collections.defaultdict(list)
    for annotation in dataset["annotations"]:
        image_id, category_id = annotation.get("image_id"), annotation.get("category_id")
        # Ids that are not integers (possibly unhashable lists) match nothing.
        image = images_by_id.get(image_id) if isinstance(image_id, int) else None
        category_id = category_id if isinstance(category_id, int) else None
        if image is None:
            skipped["unknown_image_id"] += 1
        elif category_id in background_ids:
            skipped["background_category"] += 1
        elif category_id not in category_to_label:
            skipped["unknown_category_id"] += 1
        elif annotation.get("iscrowd", 0):
            num_crowd += 1
        else:
            try:
                instance, dropped_parts = validation.annotation_to_instance(annotation, image["height"], image["width"])
            except validation.AnnotationSkipped as skip:
                skipped[skip.reason] += 1
                continue
            if dropped_parts:
                skipped["polygon_part_dropped"] += dropped_parts
            instances_by_image[image["id"]].append((category_to_label[category_id], instance))

    entries = []
    for image in dataset["images"]:
        instances = instances_by_image.get(image["id"], [])
        entries.append(ImageEntry(
            image_id=image["id"],
            file_name=image["file_name"],
            height=image["height"],
            width=image["width"],
            boxes=np.array([i["box"] for _, i in instances], dtype=np.float32).reshape(-1, 4),
            labels=np.array([label for label, _ in instances], dtype=np.int32),
            rles=tuple(i["rle"] for _, i in instances),
        ))
    return CocoAnnotations(
        images=tuple(entries),
        label_to_category_id={label: c["id"] for label, c in enumerate(categories, start=1)},
        class_names=("__background__",) + tuple(c["name"] for c in categories),
        skipped=skipped,
        num_crowd=num_crowd,
        background_category_ids=tuple(sorted(background_ids)),
        duplicate_annotation_ids=validation.duplicate_annotation_ids(dataset),
    )


def decode_masks(rles: tuple[bytes, ...], height: int, width: int) -> np.ndarray:
    """Compressed RLE counts [N] -> uint8 [N, H, W] binary masks."""
    if not rles:
        return np.zeros((0, height, width), dtype=np.uint8)
    encoded = [{"size": [height, width], "counts": counts} for counts in rles]
    # pycocotools decodes to Fortran-ordered [H, W, N]; make it C-ordered [N, H, W].
    return np.ascontiguousarray(np.transpose(mask_utils.decode(encoded), (2, 0, 1)))


def check_image_size(entry: ImageEntry, image: np.ndarray, where: str) -> None:
    """Raises `image_io.BrokenImageError` when the decoded image uint8 [H, W, 3] is not the size the file gives."""
    if image.shape[:2] != (entry.height, entry.width):
        raise image_io.BrokenImageError(
            where, f"image is {image.shape[0]}x{image.shape[1]} (HxW) but the annotation file says "
                   f"{entry.height}x{entry.width}")


def make_record(entry: ImageEntry, image: np.ndarray, where: str) -> dict:
    """The host record of an image: its decoded pixels uint8 [H, W, 3] and its checked annotations.

    Raises `image_io.BrokenImageError` (naming `where`) when the image's size is not the file's.
    """
    check_image_size(entry, image, where)
    return {
        "image_id": entry.image_id,
        "file_name": entry.file_name,
        "image": image,
        "boxes": entry.boxes.copy(),
        "labels": entry.labels.copy(),
        "masks": decode_masks(entry.rles, entry.height, entry.width),
    }


class CocoSource:
    """Random-access source over a COCO instances json and its image folder (grain `RandomAccessDataSource`).

    Args:
      annotation_file: COCO instances json (polygons, RLE and crowd annotations).
      image_dir: folder that 'file_name' of every image is relative to.
      skip_images_without_annotations: leave out images with no training instance (for training,
        as torchvision's reference does); keep them (default) for evaluation.

    Attributes:
      num_classes: K + 1 (background included).
      label_to_category_id: contiguous label 1..K -> the dataset's category id.
      class_names: [K + 1] names, index 0 is "__background__".
      skipped: Counter of skipped annotations per reason (keys of `validation.SKIP_REASONS`).
      num_crowd: crowd annotations, excluded from records, kept in the file for evaluation.
      num_images_without_annotations: images with no training instance (left out or not).
      background_category_ids: categories named '_background_' (labelme exports), given no label.
      duplicate_annotation_ids: {id: count} of annotation ids used more than once (harmless for
        training; COCO evaluation refuses them).
    """

    def __init__(self, annotation_file: str | os.PathLike, image_dir: str | os.PathLike, *,
                 skip_images_without_annotations: bool = False):
        annotations = read_coco_annotations(annotation_file)
        self.annotation_file = str(annotation_file)
        self.image_dir = pathlib.Path(image_dir)
        self.label_to_category_id = annotations.label_to_category_id
        self.class_names = annotations.class_names
        self.num_classes = len(annotations.class_names)
        self.skipped = annotations.skipped
        self.num_crowd = annotations.num_crowd
        self.background_category_ids = annotations.background_category_ids
        self.duplicate_annotation_ids = annotations.duplicate_annotation_ids
        self.num_images_without_annotations = sum(1 for e in annotations.images if not e.rles)
        self.skip_images_without_annotations = skip_images_without_annotations
        self.entries = tuple(e for e in annotations.images if e.rles or not skip_images_without_annotations)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> dict:
        """The record of image `index`; raises `image_io.BrokenImageError` for an unusable image file."""
        return make_record(self.entries[index], self.load_image(index), str(self.image_path(index)))

    def image_path(self, index: int) -> pathlib.Path:
        return self.image_dir / self.entries[index].file_name

    def image_size(self, index: int) -> tuple[int, int]:
        """(H, W) of image `index` from the json, without reading the file (the loader checks they agree)."""
        entry = self.entries[index]
        return entry.height, entry.width

    def load_image(self, index: int) -> np.ndarray:
        """uint8 [H, W, 3] of image `index`, checked against the file's size; raises `image_io.BrokenImageError`."""
        path = self.image_path(index)
        image = image_io.load_image(path)
        check_image_size(self.entries[index], image, str(path))
        return image

    def __repr__(self) -> str:
        return (f"CocoSource({self.annotation_file!r}, {str(self.image_dir)!r}, images={len(self)}, "
                f"classes={self.num_classes - 1})")
