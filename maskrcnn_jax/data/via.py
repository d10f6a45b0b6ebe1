"""VGG Image Annotator (VIA 1.x and 2.x) region json -> COCO instances json.

Accepted inputs: VIA 1.x "export annotations as json" ({key: entry}, `regions` a dict of
"0", "1", ...), VIA 2.x exports (`regions` a list) and VIA 2.x project files (entries under
"_via_img_metadata"). Polygons keep VIA's integer pixel coordinates unchanged; rectangles become
4-corner polygons. Other region shapes, polygons of fewer than 3 points and images that cannot be
opened are skipped and counted per reason.
"""

import collections
import json
import os
import pathlib

import numpy as np
from pycocotools import mask as mask_utils

from maskrcnn_jax.data import image_io
from maskrcnn_jax.data.validation import DatasetFileError


def load_via_json(path: str | os.PathLike) -> list[dict]:
    """Reads a VIA json and returns its image entries in file order; raises `DatasetFileError` if it is not VIA."""
    try:
        with open(path, encoding="utf-8") as handle:
            via = json.load(handle)
    except FileNotFoundError:
        raise DatasetFileError(path, "file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DatasetFileError(path, f"not valid JSON: {error}") from None
    if isinstance(via, dict) and "_via_img_metadata" in via:
        via = via["_via_img_metadata"]
    if not isinstance(via, dict) or not all(
            isinstance(entry, dict) and "filename" in entry and "regions" in entry for entry in via.values()):
        raise DatasetFileError(path, "not a VIA region json: expected an object of image entries, each with "
                                     "'filename' and 'regions' (or a VIA 2 project with '_via_img_metadata')")
    return list(via.values())


def via_to_coco(entries: list[dict], image_dir: str | os.PathLike, *, category_attribute: str | None = None,
                default_category: str = "object") -> tuple[dict, collections.Counter]:
    """Converts VIA image entries to a COCO instances dataset.

    Args:
      entries: VIA image entries (from `load_via_json`).
      image_dir: folder holding the entries' files; image sizes are read from them (EXIF-oriented).
      category_attribute: region attribute naming each region's category (a text value, or a
        checkbox/radio dict with one true key); regions without it get `default_category`.
      default_category: the category of regions that name none.

    Returns:
      (COCO dict with 'images', 'annotations', 'categories'; ids from 1 in file order, categories
       in order of first use), skipped: Counter of what was left out, per reason.
    """
    image_dir = pathlib.Path(image_dir)
    skipped = collections.Counter()
    images, annotations, category_ids = [], [], {}
    for entry in entries:
        try:
            height, width = image_io.image_size(image_dir / entry["filename"])
        except image_io.BrokenImageError:
            skipped["image_missing_or_unreadable"] += 1
            continue
        image_id = len(images) + 1
        images.append({"id": image_id, "file_name": entry["filename"], "height": height, "width": width})
        regions = entry["regions"].values() if isinstance(entry["regions"], dict) else entry["regions"]
        for region in regions:
            polygon = _region_polygon(region.get("shape_attributes", {}))
            if polygon is None:
                skipped[f"unsupported_shape_{region.get('shape_attributes', {}).get('name', 'missing')}"] += 1
                continue
            if len(polygon) < 6:
                skipped["polygon_fewer_than_3_points"] += 1
                continue
            name = _region_category(region.get("region_attributes", {}), category_attribute) or default_category
            category_id = category_ids.setdefault(name, len(category_ids) + 1)
            rle = mask_utils.merge(mask_utils.frPyObjects([polygon], height, width))
            points = np.reshape(polygon, (-1, 2))
            x0, y0 = points.min(axis=0)
            x1, y1 = points.max(axis=0)
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": category_id,
                "segmentation": [polygon],
                "area": float(mask_utils.area(rle)),
                "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                "iscrowd": 0,
            })
    categories = [{"id": i, "name": name, "supercategory": name} for name, i in category_ids.items()]
    return {"images": images, "annotations": annotations, "categories": categories}, skipped


def _region_polygon(shape: dict) -> list[float] | None:
    """Flat [x0, y0, x1, y1, ...] polygon of a VIA polygon or rect region; None for other shapes."""
    name = shape.get("name")
    if name == "polygon" and "all_points_x" in shape and "all_points_y" in shape:
        return [float(v) for xy in zip(shape["all_points_x"], shape["all_points_y"]) for v in xy]
    if name == "rect":
        x, y, w, h = (float(shape[k]) for k in ("x", "y", "width", "height"))
        return [x, y, x + w, y, x + w, y + h, x, y + h]
    return None


def _region_category(attributes: dict, category_attribute: str | None) -> str | None:
    if category_attribute is None:
        return None
    value = attributes.get(category_attribute)
    if isinstance(value, dict):
        chosen = [key for key, on in value.items() if on]
        return chosen[0] if len(chosen) == 1 else None
    return value if isinstance(value, str) and value else None
