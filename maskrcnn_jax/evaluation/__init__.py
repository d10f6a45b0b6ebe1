"""COCO box and mask AP: scoring COCO results with pycocotools, and evaluating a model over batches
(`CocoEvaluator`: the one way the trainer, the demo and scripts/evaluate.py score a model)."""

from maskrcnn_jax.evaluation.class_slots import ClassSlots, class_slots
from maskrcnn_jax.evaluation.coco_evaluator import CocoEvaluator, evaluation_canvases
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
from maskrcnn_jax.evaluation.evaluator import Evaluation, evaluate_model, predict_coco_results, score_model, warm_up
from maskrcnn_jax.evaluation.host_workers import default_host_workers, make_worker_pool

__all__ = [
    "ClassSlots",
    "CocoEvaluator",
    "CocoScores",
    "Evaluation",
    "STAT_NAMES",
    "assign_image_ids",
    "class_slots",
    "default_host_workers",
    "encode_mask_windows",
    "evaluate_model",
    "evaluate_results",
    "evaluation_canvases",
    "image_detections_to_coco",
    "image_results",
    "load_coco_ground_truth",
    "make_worker_pool",
    "predict_coco_results",
    "read_results_files",
    "score_model",
    "validate_results",
    "warm_up",
    "write_scores",
    "xyxy_to_xywh",
]
