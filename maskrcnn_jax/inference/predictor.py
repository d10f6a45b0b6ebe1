"""A model ready to predict, from a checkpoint or from parameters in hand: the one place that checks
the config, builds the model, checks that the parameters fit it, puts them on the devices and makes
the jitted predict. `Detector` and scripts/evaluate.py both start from it.
"""

import dataclasses
import math
import os
from typing import Callable, Sequence

import jax
import ml_collections

from maskrcnn_jax.checkpoint import check_params_fit, load_checkpoint
from maskrcnn_jax.detector import DetectorSpec, make_predict_fn, spec_from_config
from maskrcnn_jax.models import build_model, init_params


def check_range(name: str, value, low, high=math.inf) -> None:
    """Raises ValueError unless `value` is a number (not a bool) in [low, high]."""
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high):
        bounds = f"in [{low}, {high}]" if high != math.inf else f"at least {low}"
        raise ValueError(f"{name} = {value!r}: must be a number {bounds}")


def check_prediction_config(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError naming the first config field that prediction cannot use (sizes, thresholds, counts)."""
    check_range("config.input.min_size", config.input.min_size, 1)
    check_range("config.input.max_size", config.input.max_size, 1)
    check_range("config.input.size_divisible", config.input.size_divisible, 1)
    canvas = config.input.canvas_size
    if not (isinstance(canvas, tuple) and len(canvas) == 2 and all(isinstance(v, int) and v > 0 for v in canvas)):
        raise ValueError(f"config.input.canvas_size = {canvas!r}: must be two positive integers, e.g. '(800,1344)'")
    check_range("config.test.score_threshold", config.test.score_threshold, 0.0, 1.0)
    check_range("config.test.nms_threshold", config.test.nms_threshold, 0.0, 1.0)
    check_range("config.test.detections_per_image", config.test.detections_per_image, 1)


@dataclasses.dataclass(frozen=True)
class Predictor:
    """A model's config, class names and spec, its parameters on the devices, and its jitted predict:
    `predict(params, batch {"image", "image_size", "original_size"})` -> fixed-size detections
    (`maskrcnn_jax.detector.make_predict_fn`; compiled once per canvas and batch size)."""

    config: ml_collections.ConfigDict
    class_names: tuple[str, ...]  # [K] names, index = label, index 0 the background
    spec: DetectorSpec
    params: dict
    predict: Callable[[dict, dict], dict]


def make_predictor(config: ml_collections.ConfigDict, params: dict, class_names: Sequence[str],
                   sharding: jax.sharding.Sharding | None = None) -> Predictor:
    """The model of `config` with `params` (host or device arrays) placed by `sharding` (None: the
    default device). Class slots without a name are never detected. Raises ValueError naming what
    does not fit (CheckpointError for parameters that do not fit the config's model)."""
    if len(class_names) != config.model.num_classes:
        raise ValueError(f"{len(class_names)} class names for a model with {config.model.num_classes} class slots")
    check_prediction_config(config)
    class_names = tuple(class_names)
    spec = spec_from_config(config, class_names)
    model = build_model(config)
    check_params_fit(params, jax.eval_shape(lambda: init_params(model, jax.random.key(0))))
    return Predictor(config, class_names, spec, jax.device_put(params, sharding), make_predict_fn(model, spec))


def load_predictor(checkpoint: str | os.PathLike, config: ml_collections.ConfigDict | None = None, *,
                   overrides: dict | None = None, sharding: jax.sharding.Sharding | None = None) -> Predictor:
    """The predictor of the checkpoint at `checkpoint` (a checkpoint directory or a training workdir,
    see `maskrcnn_jax.checkpoint`). config: replaces the stored config; overrides: config fields by
    dotted name, e.g. {"input.min_size": 600}; sharding: where the parameters go (`make_predictor`)."""
    params, stored_config, class_names = load_checkpoint(checkpoint)
    config = (config if config is not None else stored_config).copy_and_resolve_references()
    config.update_from_flattened_dict(overrides or {})
    return make_predictor(config, params, class_names, sharding)
