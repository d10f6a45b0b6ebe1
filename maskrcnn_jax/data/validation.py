"""Checks on COCO-format annotation files: fatal problems in the file, skippable problems in annotations.

A file that cannot be a COCO instances file (missing, not JSON, wrong structure, duplicate ids)
raises `DatasetFileError` at once, naming the file and the problem. A problem in one annotation
raises `AnnotationSkipped` with a reason key from `SKIP_REASONS`; the caller skips and counts it.
"""

import collections
import json
import math
import os

import numpy as np
from pycocotools import mask as mask_utils

# Reason key -> what it means; used as the keys of every source's `skipped` counter.
SKIP_REASONS = {
    "unknown_image_id": "annotation refers to an image id that is not in 'images'",
    "unknown_category_id": "annotation refers to a category id that is not in 'categories'",
    "background_category": "annotation uses the '_background_' pseudo-category (labelme exports)",
    "missing_segmentation": "annotation has no segmentation",
    "malformed_segmentation": "segmentation is not a polygon list or RLE of the image's size",
    "polygon_fewer_than_3_points": "no polygon of the annotation has 3 or more points",
    "polygon_part_dropped": "one polygon of a multi-part annotation had fewer than 3 points (the rest kept)",
    "invalid_box": "bbox is not 4 finite numbers with positive width and height (zero-area or inverted)",
    "outside_image": "polygon lies entirely outside the image",
    "coordinates_far_outside_image": "a polygon coordinate lies more than one image size outside the image",
    "empty_mask": "segmentation covers no pixel of the image",
}

BACKGROUND_CATEGORY_NAME = "_background_"


class DatasetFileError(ValueError):
    """An annotation file that cannot be used at all. The message names the file and the problem."""

    def __init__(self, path: str | os.PathLike, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem


class AnnotationSkipped(Exception):
    """One annotation that cannot be a training target; `reason` is a key of `SKIP_REASONS`."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def load_coco_json(path: str | os.PathLike) -> dict:
    """Reads a COCO instances json and checks its structure; raises `DatasetFileError` on any fatal problem.

    Checked: the file exists and is JSON; the top level is an object with 'images', 'annotations'
    and 'categories' lists; every image has an integer 'id', a 'file_name' and positive integer
    'height' and 'width'; every category has an integer 'id' and a 'name'; no id is duplicated;
    every annotation is an object. Content problems inside annotations are not fatal.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            dataset = json.load(handle)
    except FileNotFoundError:
        raise DatasetFileError(path, "file not found") from None
    except UnicodeDecodeError as error:
        raise DatasetFileError(path, f"not a text (UTF-8) file: {error}") from None
    except json.JSONDecodeError as error:
        raise DatasetFileError(path, f"not valid JSON: {error}") from None
    except OSError as error:
        raise DatasetFileError(path, f"cannot read: {error}") from None

    if not isinstance(dataset, dict):
        raise DatasetFileError(path, f"top level is a JSON {type(dataset).__name__}, expected a COCO object "
                                     "with 'images', 'annotations' and 'categories'")
    missing = [key for key in ("images", "annotations", "categories") if key not in dataset]
    if missing:
        raise DatasetFileError(path, f"missing key(s) {missing}; a COCO instances file has 'images', "
                                     "'annotations' and 'categories'")
    for key in ("images", "annotations", "categories"):
        if not isinstance(dataset[key], list):
            raise DatasetFileError(path, f"'{key}' is a {type(dataset[key]).__name__}, expected a list")

    image_ids = set()
    for position, image in enumerate(dataset["images"]):
        where = f"images[{position}]"
        if not isinstance(image, dict):
            raise DatasetFileError(path, f"{where} is not an object")
        if not _is_int(image.get("id")):
            raise DatasetFileError(path, f"{where} has no integer 'id'")
        if not isinstance(image.get("file_name"), str) or not image["file_name"]:
            raise DatasetFileError(path, f"{where} (id {image['id']}) has no 'file_name'")
        for side in ("height", "width"):
            if not _is_int(image.get(side)) or image[side] <= 0:
                raise DatasetFileError(path, f"{where} (id {image['id']}) has no positive integer '{side}'")
        if image["id"] in image_ids:
            raise DatasetFileError(path, f"image id {image['id']} appears more than once in 'images'")
        image_ids.add(image["id"])

    category_ids = set()
    for position, category in enumerate(dataset["categories"]):
        where = f"categories[{position}]"
        if not isinstance(category, dict) or not _is_int(category.get("id")):
            raise DatasetFileError(path, f"{where} has no integer 'id'")
        if not isinstance(category.get("name"), str):
            raise DatasetFileError(path, f"{where} (id {category['id']}) has no 'name'")
        if category["id"] in category_ids:
            raise DatasetFileError(path, f"category id {category['id']} appears more than once in 'categories'")
        category_ids.add(category["id"])

    for position, annotation in enumerate(dataset["annotations"]):
        if not isinstance(annotation, dict):
            raise DatasetFileError(path, f"annotations[{position}] is not an object")
    return dataset


def duplicate_annotation_ids(dataset: dict) -> dict:
    """{annotation id: how many annotations carry it} for ids used more than once (pycocotools keeps
    only the last of them in its index, so COCO evaluation would score that one twice)."""
    counts = collections.Counter(a.get("id") for a in dataset["annotations"] if _is_int(a.get("id")))
    return {annotation_id: count for annotation_id, count in counts.items() if count > 1}


def annotation_to_instance(annotation: dict, height: int, width: int) -> tuple[dict, int]:
    """Checks one non-crowd annotation and turns it into a training instance.

    Args:
      annotation: a COCO annotation object (image and category already checked by the caller).
      height, width: the image's size from the annotation file.

    The box is [x_min, y_min, x_max + 1, y_max + 1] of the mask's pixels (pycocotools toBbox), so
    boxes and masks always agree; a 'bbox' in the file is only checked for sanity.

    Returns:
      (instance, dropped_parts): instance is {"box": float32 [4] xyxy inside the image,
      "rle": bytes (pycocotools compressed RLE counts of the [height, width] mask)};
      dropped_parts counts polygons of fewer than 3 points that were left out.

    Raises:
      AnnotationSkipped: with the reason, when the annotation cannot be a training target.
    """
    if "bbox" in annotation:
        # The file's bbox only has to be sane: the training box comes from the mask, because some
        # exports keep a bbox that no longer matches the polygons, and thin polygon spikes cover no pixel.
        _check_bbox(annotation["bbox"])
    rle, dropped_parts = _segmentation_to_rle(annotation.get("segmentation"), height, width)
    if int(mask_utils.area(rle)) == 0:
        # Tell "drawn off the image" apart from "degenerate inside it" for the user.
        raise AnnotationSkipped(_outside_or_empty(annotation.get("segmentation"), height, width))
    box = _rle_box(rle)
    return {"box": np.array(box, dtype=np.float32), "rle": rle["counts"]}, dropped_parts


def _outside_or_empty(segmentation, height: int, width: int) -> str:
    if isinstance(segmentation, list):
        points = np.concatenate([np.reshape(p, (-1, 2)) for p in segmentation if len(p) >= 6])
        x0, y0 = points.min(axis=0)
        x1, y1 = points.max(axis=0)
        if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
            return "outside_image"
    return "empty_mask"


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_bbox(bbox) -> None:
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or not all(_is_finite_number(v) for v in bbox):
        raise AnnotationSkipped("invalid_box")
    if bbox[2] <= 0 or bbox[3] <= 0:
        raise AnnotationSkipped("invalid_box")


def _rle_box(rle: dict) -> tuple[float, float, float, float]:
    x, y, box_width, box_height = (float(v) for v in mask_utils.toBbox(rle))
    return x, y, x + box_width, y + box_height


def _segmentation_to_rle(segmentation, height: int, width: int) -> tuple[dict, int]:
    """Polygon list, uncompressed or compressed RLE -> (compressed RLE dict, dropped polygon parts)."""
    if segmentation is None or (isinstance(segmentation, list) and not segmentation):
        raise AnnotationSkipped("missing_segmentation")
    if isinstance(segmentation, list):
        return _polygons_to_rle(segmentation, height, width)
    try:
        rle_runs(segmentation, height, width)
    except ValueError:
        raise AnnotationSkipped("malformed_segmentation") from None
    counts = segmentation["counts"]
    if isinstance(counts, list):
        return mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width), 0
    return {"size": [height, width], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}, 0


def rle_runs(segmentation, height: int, width: int, compressed_only: bool = False) -> list[int]:
    """The run lengths of an RLE {"size": [H, W], "counts": compressed string or list of runs} of an
    [height, width] mask. Raises ValueError saying why pycocotools could not decode it safely (it
    decodes without bounds checks): wrong size, counts of another type, a cut-off string, negative
    runs, or runs that do not cover the image exactly. compressed_only: list counts are refused too."""
    if not (isinstance(segmentation, dict) and {"size", "counts"} <= segmentation.keys()):
        raise ValueError("not an RLE dict with 'size' and 'counts'")
    size = segmentation["size"]
    if not isinstance(size, (list, tuple)) or list(size) != [height, width]:
        raise ValueError(f"its size {size!r} is not the image's [{height}, {width}]")
    counts = segmentation["counts"]
    if isinstance(counts, str) and counts.isascii():
        counts = counts.encode("ascii")
    if isinstance(counts, bytes):
        runs = compressed_rle_runs(counts)
        if runs is None:
            raise ValueError("its counts string is cut off")
    elif isinstance(counts, list) and all(_is_int(run) for run in counts) and not compressed_only:
        runs = counts
    else:
        expected = "a compressed RLE string (pycocotools mask.encode)" if compressed_only else "a compressed string or a list of integers"
        raise ValueError(f"its counts are not {expected}")
    if any(run < 0 for run in runs):
        raise ValueError("its counts decode to negative run lengths")
    if sum(runs) != height * width:
        raise ValueError(f"its runs cover {sum(runs)} pixels, the image has {height * width}")
    return runs


def compressed_rle_runs(counts: bytes) -> list[int] | None:
    """Run lengths of a COCO compressed RLE string (pycocotools rleFrString), or None if it is cut off.

    Each run is a little-endian base-32 number in characters offset by 48; 0x20 marks "more
    characters follow", 0x10 in the last character is the sign; runs after the second are stored
    as differences to the run two before.
    """
    runs = []
    position = 0
    while position < len(counts):
        value, shift, more = 0, 0, True
        while more:
            if position == len(counts):
                return None
            chunk = counts[position] - 48
            value |= (chunk & 0x1F) << shift
            more = bool(chunk & 0x20)
            position += 1
            shift += 5
            if not more and chunk & 0x10:
                value |= -1 << shift
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    return runs


def _polygons_to_rle(polygons: list, height: int, width: int) -> tuple[dict, int]:
    kept = []
    dropped = 0
    for polygon in polygons:
        if not isinstance(polygon, list) or len(polygon) % 2 or not all(_is_finite_number(v) for v in polygon):
            raise AnnotationSkipped("malformed_segmentation")
        # pycocotools walks every edge at 5x resolution: a vertex at 1e9 would take minutes and gigabytes.
        if polygon and (not all(-width <= v <= 2 * width for v in polygon[0::2])
                        or not all(-height <= v <= 2 * height for v in polygon[1::2])):
            raise AnnotationSkipped("coordinates_far_outside_image")
        # A part of fewer than 3 points encloses nothing; pycocotools would also misread a
        # 4-number list as a box, so such parts are left out before rasterising.
        if len(polygon) < 6:
            dropped += 1
        else:
            kept.append([float(v) for v in polygon])
    if not kept:
        raise AnnotationSkipped("polygon_fewer_than_3_points")
    return mask_utils.merge(mask_utils.frPyObjects(kept, height, width)), dropped
