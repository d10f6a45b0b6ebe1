"""COCO box and mask AP of a COCO results list, scored with pycocotools' COCOeval.

A results list holds one dict per detection: `image_id`, `category_id` (the dataset's ids),
`score`, and `bbox` ([x, y, w, h] absolute pixels) and/or `segmentation` (compressed RLE of the
full original image). Entries with a `bbox` are scored for `bbox`; entries with a
`segmentation` are scored for `segm`. Entries may name their image by `file_name` instead
(predict.py's detections.json): `assign_image_ids` finds its id in the ground truth.

Nothing that would silently change a score gets through: both files are checked first. A problem
pycocotools would mis-score (a non-finite score, a box with negative or non-finite size, an RLE it
cannot decode, duplicate annotation ids, unknown ids) raises ValueError naming the entry; what it
scores correctly but is probably a mistake (scores outside [0, 1], zero-size boxes, repeated
entries, ground truth without 'iscrowd') comes back as counted warnings.
"""

import collections
import contextlib
import copy
import dataclasses
import io
import json
import math
import os
import posixpath

from etils import epath
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from maskrcnn_jax.data.validation import DatasetFileError, duplicate_annotation_ids, load_coco_json, rle_runs

IOU_TYPES = ("bbox", "segm")
# The order of COCOeval.stats, named as in the metrics JSON.
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
_FIELD_OF_IOU_TYPE = {"bbox": "bbox", "segm": "segmentation"}


@dataclasses.dataclass
class CocoScores:
    """What COCOeval found.

    metrics: {iou_type: {stat name: value}} with the 12 standard stats (-1 where no GT falls in the range).
    per_category_ap: {iou_type: {category name: AP@[.5:.95]}} (-1 for a category without GT).
    tables: {iou_type: the 12-line table pycocotools' summarize() prints}.
    warnings: what was scored but looks wrong, one counted line each (see the module docstring).
    """

    metrics: dict
    per_category_ap: dict
    tables: dict
    warnings: list = dataclasses.field(default_factory=list)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_finite_number(value) -> bool:
    return _is_number(value) and math.isfinite(value)


def _box_problem(bbox) -> str | None:
    """Why a COCO [x, y, w, h] box cannot be scored, or None."""
    if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
        return f"bbox {bbox!r:.60} is not 4 numbers [x, y, width, height]"
    if not all(math.isfinite(v) for v in bbox):
        return f"bbox {list(bbox)} is not finite"
    if bbox[2] < 0 or bbox[3] < 0:
        return f"bbox {list(bbox)} has a negative width or height"
    return None


def load_coco_ground_truth(annotation_file, warnings: list | None = None) -> COCO:
    """pycocotools COCO index of an annotation json, checked first (without pycocotools' chatter).

    Raises DatasetFileError (a ValueError) naming the file and the problem: not a COCO instances
    file, duplicate image, category or annotation ids, an annotation whose bbox or area is missing or
    not finite. Annotations without 'iscrowd' count as not crowd, and those naming an unknown image
    or category are never scored: both are appended to `warnings` (counted) when given.
    """
    dataset = load_coco_json(annotation_file)
    duplicates = duplicate_annotation_ids(dataset)
    if duplicates:
        examples = ", ".join(f"{i} ({n} times)" for i, n in list(duplicates.items())[:5])
        raise DatasetFileError(annotation_file, f"{len(duplicates)} annotation ids are used more than once, e.g. "
                                                f"{examples}; pycocotools would score only the last of each: "
                                                "give every annotation its own id")
    image_ids = {image["id"] for image in dataset["images"]}
    category_ids = {category["id"] for category in dataset["categories"]}
    without_crowd, unknown = 0, 0
    for position, annotation in enumerate(dataset["annotations"]):
        where = f"annotations[{position}] (id {annotation.get('id')!r})"
        problem = _box_problem(annotation.get("bbox"))
        if problem:
            raise DatasetFileError(annotation_file, f"{where}: {problem}")
        if not _is_finite_number(annotation.get("area")):
            raise DatasetFileError(annotation_file, f"{where}: 'area' {annotation.get('area')!r} is not a finite number")
        if not _is_number(annotation.get("id")):
            raise DatasetFileError(annotation_file, f"{where}: no integer 'id'")
        if "iscrowd" not in annotation:
            annotation["iscrowd"] = 0
            without_crowd += 1
        if annotation.get("image_id") not in image_ids or annotation.get("category_id") not in category_ids:
            unknown += 1
    if warnings is not None and without_crowd:
        warnings.append(f"{without_crowd} ground-truth annotations have no 'iscrowd': taken as not crowd")
    if warnings is not None and unknown:
        warnings.append(f"{unknown} ground-truth annotations name an image or category id the file does not "
                        "have: they are never scored")
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def iou_types_in(results: list) -> tuple:
    """The iou types a results list can be scored for: `bbox` if any entry has a box, `segm` if any has a mask."""
    return tuple(t for t in IOU_TYPES if any(_FIELD_OF_IOU_TYPE[t] in r for r in results))


def _path_suffix_match(name: str, other: str) -> bool:
    """Whether one relative path ends with the other, whole components (a/b/x.jpg and b/x.jpg)."""
    a, b = posixpath.normpath(name).split("/"), posixpath.normpath(other).split("/")
    shorter = min(len(a), len(b))
    return a[-shorter:] == b[-shorter:]


def assign_image_ids(coco_gt: COCO, results: list) -> list:
    """Results whose entries carry `file_name` get the id of the ground truth's image of that name
    (the same relative path, or one path ending with the other); other entries are kept as they are.

    Raises ValueError for a file name that matches no image, or several.
    """
    by_basename = collections.defaultdict(list)
    for image in coco_gt.dataset["images"]:
        by_basename[posixpath.basename(image["file_name"])].append(image)
    ids = {}
    for entry in results:
        name = entry.get("file_name") if isinstance(entry, dict) else None
        if name is None or name in ids:
            continue
        if not isinstance(name, str):
            raise ValueError(f"a result's file_name {name!r} is not a string")
        candidates = by_basename.get(posixpath.basename(name.replace("\\", "/")), [])
        exact = [image for image in candidates if image["file_name"] == name]
        matches = exact or [image for image in candidates if _path_suffix_match(name, image["file_name"])]
        if not matches:
            raise ValueError(f"results name file_name {name!r}, which is not an image of the annotation file "
                             "(predict the annotation file's images, or score against the file that lists them)")
        if len(matches) > 1:
            raise ValueError(f"results file_name {name!r} matches {len(matches)} images of the annotation file "
                             f"({', '.join(image['file_name'] for image in matches[:3])}): predict with paths "
                             "that keep the folders that tell them apart")
        ids[name] = matches[0]["id"]
    return [dict(entry, image_id=ids[entry["file_name"]]) if isinstance(entry, dict) and "file_name" in entry
            else entry for entry in results]


def _entry_name(position: int, entry: dict) -> str:
    return f"result {position} (image_id {entry.get('image_id')!r}, category_id {entry.get('category_id')!r})"


def validate_results(coco_gt: COCO, results: list) -> list:
    """Raises ValueError naming the first entry that cannot be scored correctly: not a list, missing
    keys, unknown image or category ids, a score that is not a finite number, a bbox that is not 4
    finite numbers with non-negative width and height, a segmentation that is not a compressed RLE
    of its image's size that decodes. Returns the counted warnings (module docstring)."""
    if not isinstance(results, list):
        raise ValueError(f"COCO results must be a list of detections, got {type(results).__name__}")
    required = {"image_id", "category_id", "score"}
    missing = [i for i, r in enumerate(results) if not (isinstance(r, dict) and required <= r.keys())]
    if missing:
        raise ValueError(f"results {missing[:5]} are not dicts with image_id, category_id and score")
    unscorable = [i for i, r in enumerate(results) if "bbox" not in r and "segmentation" not in r]
    if unscorable:
        raise ValueError(f"results {unscorable[:5]} have neither a bbox nor a segmentation")
    # key=repr: ids of a wrong type (e.g. "139") are reported, not a TypeError from sorting.
    hashable = (int, float, str)  # anything else (a list) is named by its repr
    image_ids = {r["image_id"] if isinstance(r["image_id"], hashable) else repr(r["image_id"]) for r in results}
    unknown_images = sorted(image_ids - set(coco_gt.getImgIds()), key=repr)
    if unknown_images:
        raise ValueError(
            f"{len(unknown_images)} image ids in the results are not in the ground truth, e.g. {unknown_images[:5]}"
        )
    known_categories = set(coco_gt.getCatIds())
    category_ids = {r["category_id"] if isinstance(r["category_id"], hashable) else repr(r["category_id"]) for r in results}
    unknown_categories = sorted(category_ids - known_categories, key=repr)
    if unknown_categories:
        raise ValueError(
            f"category ids {unknown_categories[:10]} in the results are not in the ground truth "
            f"(its ids: {sorted(known_categories)[:10]}...); map contiguous labels to category ids"
        )
    counts = collections.Counter()
    seen = set()
    for position, r in enumerate(results):
        if not _is_finite_number(r["score"]):
            raise ValueError(f"{_entry_name(position, r)}: score {r['score']!r} is not a finite number")
        if not 0.0 <= r["score"] <= 1.0:
            counts["scores outside [0, 1] (only their order counts)"] += 1
        if "bbox" in r:
            problem = _box_problem(r["bbox"])
            if problem:
                raise ValueError(f"{_entry_name(position, r)}: {problem}")
            if r["bbox"][2] == 0 or r["bbox"][3] == 0:
                counts["boxes of zero width or height (they match nothing)"] += 1
        segmentation = r.get("segmentation")
        if segmentation is not None:
            image = coco_gt.imgs[r["image_id"]]
            try:
                rle_runs(segmentation, image["height"], image["width"], compressed_only=True)
            except ValueError as error:
                raise ValueError(f"{_entry_name(position, r)}: its segmentation cannot be scored: {error} "
                                 "(masks must be compressed RLE at the original image size)") from None
        key = json.dumps([r["image_id"], r["category_id"], r["score"], r.get("bbox"), r.get("segmentation")],
                         sort_keys=True)
        if key in seen:
            counts["entries repeating an earlier entry exactly (the same file given twice?)"] += 1
        seen.add(key)
    return [f"{count} {what}" for what, count in counts.items()]


def _results_index(coco_gt: COCO, results: list) -> COCO:
    """Like COCO.loadRes, but an empty list gives an empty index (loadRes raises on it) and
    loading chatter is kept off stdout."""
    if results:
        with contextlib.redirect_stdout(io.StringIO()):
            return coco_gt.loadRes(results)
    empty = COCO()
    empty.dataset = {
        "images": list(coco_gt.dataset["images"]),
        "categories": copy.deepcopy(coco_gt.dataset["categories"]),
        "annotations": [],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        empty.createIndex()
    return empty


def _results_for(results: list, iou_type: str) -> list:
    """The entries scored for one iou type, copied (loadRes writes into them).

    For `segm` the box is dropped, so COCOeval sizes a detection by its mask area, not its box
    area, when it sorts it into small/medium/large; torchvision's and detectron2's evaluators do the same.
    """
    field = _FIELD_OF_IOU_TYPE[iou_type]
    selected = [dict(r) for r in results if field in r]
    if iou_type == "segm":
        for r in selected:
            r.pop("bbox", None)
    return selected


def _per_category_ap(coco_eval: COCOeval, coco_gt: COCO) -> dict:
    """AP@[.5:.95], area all, 100 detections, for each category (-1 where it has no GT)."""
    # precision is [T iou thresholds, R recall points, K categories, A areas, M max-dets].
    precision = coco_eval.eval["precision"][:, :, :, 0, -1]
    per_category = {}
    for k, category_id in enumerate(coco_eval.params.catIds):
        values = precision[:, :, k]
        values = values[values > -1]
        per_category[coco_gt.cats[category_id]["name"]] = float(values.mean()) if values.size else -1.0
    return per_category


def evaluate_results(coco_gt: COCO, results: list, iou_types=None, image_ids=None) -> CocoScores:
    """Scores a COCO results list against `coco_gt` with COCOeval.

    iou_types: which of ("bbox", "segm") to score; by default those the results carry. An empty
    results list is valid (a model that found nothing): every AP and AR is 0 (-1 where no GT).
    image_ids: score only these images (e.g. the part of a dataset a model was run on); default all
    of `coco_gt`'s, so an image without results counts its GT as missed.
    Raises ValueError for results that cannot be scored (see `validate_results`); the returned
    scores carry its warnings.
    """
    warnings = validate_results(coco_gt, results)
    if iou_types is None:
        iou_types = iou_types_in(results) if results else IOU_TYPES
    metrics, per_category, tables = {}, {}, {}
    for iou_type in iou_types:
        selected = _results_for(results, iou_type)
        if results and not selected:
            raise ValueError(f"no result carries a {_FIELD_OF_IOU_TYPE[iou_type]!r}: cannot score {iou_type}")
        coco_dt = _results_index(coco_gt, selected)
        coco_eval = COCOeval(coco_gt, coco_dt, iou_type)
        if image_ids is not None:
            coco_eval.params.imgIds = sorted(image_ids)
        with contextlib.redirect_stdout(io.StringIO()):
            coco_eval.evaluate()
            coco_eval.accumulate()
        table = io.StringIO()
        with contextlib.redirect_stdout(table):
            coco_eval.summarize()
        metrics[iou_type] = {name: float(value) for name, value in zip(STAT_NAMES, coco_eval.stats)}
        per_category[iou_type] = _per_category_ap(coco_eval, coco_gt)
        tables[iou_type] = table.getvalue()
    return CocoScores(metrics=metrics, per_category_ap=per_category, tables=tables, warnings=warnings)


def read_results_files(paths) -> list:
    """The COCO results lists of several json files, concatenated (e.g. a bbox file and a segm file).

    Raises ValueError naming a file that cannot be read or does not hold a list.
    """
    results = []
    for path in paths:
        try:
            loaded = json.loads(epath.Path(path).read_text())
        except (OSError, ValueError) as error:  # ValueError: not JSON, or not text
            raise ValueError(f"cannot read results file {path}: {error}") from error
        if not isinstance(loaded, list):
            raise ValueError(f"{path} is not a COCO results file (a json list of detections)")
        results.extend(loaded)
    return results


def write_scores(scores: CocoScores, output_dir: str | os.PathLike) -> None:
    """Writes output_dir/metrics.json ({iou_type: {stat: value}}) and per_category_ap.json."""
    output_dir = epath.Path(output_dir)  # a local folder or a URI (gs://)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "metrics.json").write_text(json.dumps(scores.metrics, indent=1))
    (output_dir / "per_category_ap.json").write_text(json.dumps(scores.per_category_ap, indent=1))
