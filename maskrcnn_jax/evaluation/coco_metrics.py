"""COCO box and mask AP of a COCO results list, scored with pycocotools' COCOeval.

A results list holds one dict per detection: `image_id`, `category_id` (the dataset's ids),
`score`, and `bbox` ([x, y, w, h] absolute pixels) and/or `segmentation` (compressed RLE of the
full original image). Entries with a `bbox` are scored for `bbox`; entries with a
`segmentation` are scored for `segm`.
"""

import contextlib
import copy
import dataclasses
import io
import json
import os
import pathlib

from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

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
    """

    metrics: dict
    per_category_ap: dict
    tables: dict


def load_coco_ground_truth(annotation_file) -> COCO:
    """pycocotools COCO index of an annotation json, without its loading chatter."""
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(annotation_file))


def iou_types_in(results: list) -> tuple:
    """The iou types a results list can be scored for: `bbox` if any entry has a box, `segm` if any has a mask."""
    return tuple(t for t in IOU_TYPES if any(_FIELD_OF_IOU_TYPE[t] in r for r in results))


def validate_results(coco_gt: COCO, results: list) -> None:
    """Raises ValueError naming the first problems: not a list, missing keys, unknown image or
    category ids, or a mask whose size differs from its image's."""
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
    unknown_images = sorted({r["image_id"] for r in results} - set(coco_gt.getImgIds()), key=repr)
    if unknown_images:
        raise ValueError(
            f"{len(unknown_images)} image ids in the results are not in the ground truth, e.g. {unknown_images[:5]}"
        )
    unknown_categories = sorted({r["category_id"] for r in results} - set(coco_gt.getCatIds()), key=repr)
    if unknown_categories:
        raise ValueError(
            f"category ids {unknown_categories[:10]} in the results are not in the ground truth "
            f"(its ids: {sorted(coco_gt.getCatIds())[:10]}...); map contiguous labels to category ids"
        )
    for r in results:
        segmentation = r.get("segmentation")
        if segmentation is None:
            continue
        if not (isinstance(segmentation, dict) and {"size", "counts"} <= segmentation.keys()):
            raise ValueError(f"result segmentation must be compressed RLE {{size, counts}}, got {segmentation!r:.80}")
        image = coco_gt.imgs[r["image_id"]]
        if list(segmentation["size"]) != [image["height"], image["width"]]:
            raise ValueError(
                f"image {r['image_id']} is {image['height']}x{image['width']} but a result mask is "
                f"{segmentation['size'][0]}x{segmentation['size'][1]}: masks must be at the original resolution"
            )


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
    Raises ValueError for results that cannot be scored (see `validate_results`).
    """
    validate_results(coco_gt, results)
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
    return CocoScores(metrics=metrics, per_category_ap=per_category, tables=tables)


def read_results_files(paths) -> list:
    """The COCO results lists of several json files, concatenated (e.g. a bbox file and a segm file).

    Raises ValueError naming a file that cannot be read or does not hold a list.
    """
    results = []
    for path in paths:
        try:
            with open(path) as f:
                loaded = json.load(f)
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"cannot read results file {path}: {error}") from error
        if not isinstance(loaded, list):
            raise ValueError(f"{path} is not a COCO results file (a json list of detections)")
        results.extend(loaded)
    return results


def write_scores(scores: CocoScores, output_dir: str | os.PathLike) -> None:
    """Writes output_dir/metrics.json ({iou_type: {stat: value}}) and per_category_ap.json."""
    output_dir = pathlib.Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "metrics.json").write_text(json.dumps(scores.metrics, indent=1))
    (output_dir / "per_category_ap.json").write_text(json.dumps(scores.per_category_ap, indent=1))
