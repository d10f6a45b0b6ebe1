"""COCO box and mask AP: scoring COCO results with pycocotools, and evaluating a model over batches."""

from maskrcnn_jax.evaluation.coco_metrics import (
    STAT_NAMES,
    CocoScores,
    assign_image_ids,
    evaluate_results,
    load_coco_ground_truth,
    read_results_files,
    validate_results,
    write_scores,
)
from maskrcnn_jax.evaluation.coco_results import (
    encode_mask_windows,
    image_detections_to_coco,
    image_results,
    xyxy_to_xywh,
)
from maskrcnn_jax.evaluation.evaluator import (
    evaluate_model,
    evaluation_batches,
    model_label_to_category_id,
    predict_coco_results,
    warm_up,
)
from maskrcnn_jax.evaluation.host_workers import default_host_workers, make_worker_pool

__all__ = [
    "CocoScores",
    "STAT_NAMES",
    "assign_image_ids",
    "default_host_workers",
    "encode_mask_windows",
    "evaluate_model",
    "evaluate_results",
    "evaluation_batches",
    "image_detections_to_coco",
    "image_results",
    "load_coco_ground_truth",
    "make_worker_pool",
    "model_label_to_category_id",
    "predict_coco_results",
    "read_results_files",
    "validate_results",
    "warm_up",
    "write_scores",
    "xyxy_to_xywh",
]
