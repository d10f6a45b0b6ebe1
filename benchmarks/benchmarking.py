"""Where the time goes: XLA's FLOP counts, a matmul ceiling measured in the same run, per-stage
profiles of prediction and of a training step, and our model's speed alone on one accelerator.

Used by benchmarks/benchmark.py and benchmarks/benchmark_data.py (docs/benchmarks.md).

A stage is jitted on its own, on the real outputs of the stage before it, warmed up once, then run
`repeats` times; its seconds are the median. Its GFLOP are XLA's own count for the compiled stage
(`compiled.cost_analysis()["flops"]`): XLA counts a loop's body once, so stages that loop
(RoIAlign's `lax.map` over boxes, NMS) count fewer FLOP than they run.

Inference stages: backbone, FPN, RPN head + proposals (`detector.predict.propose`), RoI heads
(box head, per-class NMS, mask head: `detect`), post-processing + paste (`detection_outputs` and
the binary mask paster at the image size).
Training stages, each forward + backward where it has parameters or feeds them (cotangents of ones,
passed as arguments): backbone (gradients of its trainable parameters), FPN, RPN head + proposals,
targets (anchor and RoI sampling, mask targets), RoI heads (RoIAlign, box and mask heads), losses
(forward + gradients w.r.t. the heads' outputs), optimizer (`training.step.apply_gradients` on the
stages' gradients).

Legend: B batch, Hc Wc canvas, M max GT instances, Sm GT mask side.
"""

import statistics
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from maskrcnn_jax.detector import make_binary_mask_paster, make_predict_fn, pyramid_anchors, spec_from_config
from maskrcnn_jax.detector.inputs import model_images
from maskrcnn_jax.detector.losses import (LOSS_NAMES, head_losses, make_loss_fn, roi_heads, training_proposals,
                                         training_targets)
from maskrcnn_jax.detector.predict import detect, detection_outputs, propose
from maskrcnn_jax.detector.pyramid import POOLED_STRIDES, flatten_rpn_outputs
from maskrcnn_jax.detector.spec import NORM_STATISTICS, DetectorSpec
from maskrcnn_jax.models import build_model, frozen_parameter_mask, init_params
from maskrcnn_jax.training.optimizer import sgd_without_learning_rate
from maskrcnn_jax.training.state import TrainState
from maskrcnn_jax.training.step import apply_gradients, train_step_fn, trainable_gradients

INFERENCE_STAGES = ("backbone", "fpn", "rpn + proposals", "roi heads", "post-processing + paste")
TRAIN_STAGES = ("backbone", "fpn", "rpn + proposals", "targets", "roi heads", "losses", "optimizer")
# The parameter subtrees of the backbone and RPN; everything else but the FPN is the RoI heads'.
BACKBONE, FPN, RPN = "backbone", "fpn", "rpn_head"


def compiled_flops(compiled) -> float:
    """XLA's FLOP count of a compiled function (`jax.jit(f).lower(...).compile()`)."""
    return float(compiled.cost_analysis().get("flops", 0.0))


def median_seconds(compiled: Callable, args: tuple, repeats: int) -> float:
    """Median wall seconds of `compiled(*args)` to `block_until_ready`, after one warm-up call."""
    jax.block_until_ready(compiled(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


class StageProfiler:
    """Compiles, counts and times stages one after the other; `run` returns the stage's outputs so
    the next stage is profiled on real inputs."""

    def __init__(self, repeats: int):
        self.repeats = repeats
        self.stages: list[dict] = []

    def run(self, name: str, fn: Callable, *args):
        compiled = jax.jit(fn).lower(*args).compile()
        flops = compiled_flops(compiled)
        seconds = median_seconds(compiled, args, self.repeats)
        self.stages.append({"stage": name, "seconds": seconds, "gflop": flops / 1e9, "gflops": flops / 1e9 / seconds})
        return compiled(*args)

    def rows(self) -> list[dict]:
        """One dict per stage {"stage", "seconds", "share" of the stages' total, "gflop", "gflops"}."""
        total = sum(stage["seconds"] for stage in self.stages)
        return [{**stage, "share": stage["seconds"] / total} for stage in self.stages]


def matmul_ceiling(size: int = 2048, repeats: int = 5) -> dict:
    """The machine's float32 matmul speed now: a [size, size] @ [size, size] product jitted and timed
    (median of `repeats`). Returns {"size", "seconds", "gflop", "gflops"}."""
    keys = jax.random.split(jax.random.key(0))
    a, b = (jax.random.normal(key, (size, size), jnp.float32) for key in keys)
    compiled = jax.jit(jnp.matmul).lower(a, b).compile()
    seconds = median_seconds(compiled, (a, b), repeats)
    # Counted by hand: on GPU the product is a cuBLAS call, which XLA's cost analysis reports as -1 FLOP.
    gflop = 2 * size**3 / 1e9
    return {"size": size, "seconds": seconds, "gflop": gflop, "gflops": gflop / seconds}


def _subtree(tree: dict, names) -> dict:
    return {name: tree[name] for name in names}


def _apply(model, method: Callable) -> Callable:
    """(params subtree, inputs) -> outputs of `method(module, inputs)` (e.g. the backbone alone)."""
    return lambda params, inputs: model.apply({"params": params}, inputs, method=method)


def _apply_training(model, params, *args, method, **kwargs):
    """A model method called in training mode (train=True: v2's BatchNorm on batch statistics, as
    detector_losses runs it); the new running statistics are computed and dropped."""
    outputs, _ = model.apply({"params": params}, *args, method=method, mutable=[NORM_STATISTICS], **kwargs)
    return outputs


def _forward_backward(fn: Callable, params, inputs, frozen_mask, differentiate_inputs: bool):
    """fn(params, inputs)'s outputs, its parameter gradients (frozen leaves zero, as the train step
    has them) and input gradients (None unless differentiate_inputs), for a cotangent of ones."""
    if differentiate_inputs:
        outputs, vjp = jax.vjp(fn, params, inputs)
    else:
        outputs, vjp = jax.vjp(lambda p: fn(p, inputs), params)
    grads = vjp(jax.tree.map(jnp.ones_like, outputs))
    input_grads = grads[1] if differentiate_inputs else None
    return outputs, trainable_gradients(grads[0], frozen_mask), input_grads


def profile_inference(model, spec: DetectorSpec, params: dict, batch: dict, image_size: tuple[int, int],
                      repeats: int = 3) -> list[dict]:
    """Per-stage profile (INFERENCE_STAGES) of `predict` on batch (BATCH_KEYS) plus pasting the masks
    at image_size (H, W), as benchmarks/benchmark.py's inference runs. Returns StageProfiler.rows()."""
    profiler = StageProfiler(repeats)
    images, image_sizes = model_images(batch), batch["image_size"]
    canvas = images.shape[1:3]
    body = profiler.run("backbone", _apply(model, lambda module, x: module.backbone(x)),
                        _subtree(params, [BACKBONE]), images)
    features = profiler.run("fpn", _apply(model, lambda module, x: module.fpn(x)), _subtree(params, [FPN]), body)
    proposals, _, proposal_valid = profiler.run(
        "rpn + proposals", lambda p, f, s: propose(model, spec, p, f, canvas, s), params, features, image_sizes)
    detections, mask_logits = profiler.run(
        "roi heads", lambda p, f, b, v, s: detect(model, spec, p, f, b, v, s),
        params, features, proposals, proposal_valid, image_sizes)
    paste = make_binary_mask_paster(*image_size)

    def post_process(detections, mask_logits, image_sizes, original_sizes):
        outputs = detection_outputs(detections, mask_logits, image_sizes, original_sizes)
        return outputs, paste(outputs["masks"], outputs["boxes"])

    profiler.run("post-processing + paste", post_process, detections, mask_logits, image_sizes, batch["original_size"])
    return profiler.rows()


def profile_train_step(model, spec: DetectorSpec, state, batch: dict, optimizer, learning_rate: float,
                       frozen_mask: dict, repeats: int = 3) -> list[dict]:
    """Per-stage profile (TRAIN_STAGES) of one training step of `detector.losses.make_loss_fn` +
    `training.step.train_step_fn` on batch (the data pipeline's schema) from `state` (a TrainState).
    Returns StageProfiler.rows()."""
    profiler = StageProfiler(repeats)
    params = state.params
    head_names = sorted(set(params) - {BACKBONE, FPN, RPN})
    images = model_images(batch)

    def backbone(p, x):
        # The images need no gradient.
        backbone_fn = lambda q, x: _apply_training(model, q, x, method=lambda module, x: module.backbone(x, True))  # noqa: E731
        return _forward_backward(backbone_fn, p, x, _subtree(frozen_mask, [BACKBONE]), differentiate_inputs=False)[:2]

    body, backbone_grads = profiler.run("backbone", backbone, _subtree(params, [BACKBONE]), images)

    def fpn(p, x):
        fpn_fn = lambda q, x: _apply_training(model, q, x, method=lambda module, x: module.fpn(x, True))  # noqa: E731
        return _forward_backward(fpn_fn, p, x, _subtree(frozen_mask, [FPN]), differentiate_inputs=True)

    features, fpn_grads, _ = profiler.run("fpn", fpn, _subtree(params, [FPN]), body)
    anchors, level_sizes = pyramid_anchors(spec, images.shape[1:3], [level.shape[1:3] for level in features])

    def rpn(p, features, image_sizes):
        flat_rpn = lambda q, f: flatten_rpn_outputs(*model.apply({"params": q}, f, method="rpn"))  # noqa: E731
        outputs, grads, feature_grads = _forward_backward(flat_rpn, p, features, _subtree(frozen_mask, [RPN]), True)
        proposals = training_proposals(spec, anchors, level_sizes, *outputs, image_sizes)
        return outputs, grads, feature_grads, proposals

    (objectness, rpn_deltas), rpn_grads, _, (proposals, proposal_valid) = profiler.run(
        "rpn + proposals", rpn, _subtree(params, [RPN]), features, batch["image_size"])
    step_key = jax.random.fold_in(jax.random.wrap_key_data(state.key), state.step)
    targets = profiler.run("targets", lambda *args: training_targets(spec, anchors, *args),
                           proposals, proposal_valid, batch, step_key)

    def heads(p, pooled_features, rois, slots):
        # The running statistics are computed and dropped, as _apply_training does.
        head_fn = lambda q, f: roi_heads(model, spec, q, f, rois, slots)[0]  # noqa: E731
        return _forward_backward(head_fn, p, pooled_features, _subtree(frozen_mask, head_names), True)

    head_outputs, head_grads, _ = profiler.run(
        "roi heads", heads, _subtree(params, head_names), features[: len(POOLED_STRIDES)],
        targets["rois"], targets["mask_slots"])

    def losses(outputs, targets):
        total = lambda o: sum(head_losses(*o, targets)[0][name] for name in LOSS_NAMES)  # noqa: E731
        return jax.value_and_grad(total)(outputs)

    loss, _ = profiler.run("losses", losses, ((objectness, rpn_deltas) + tuple(head_outputs)), targets)
    grads = {**backbone_grads, **fpn_grads, **rpn_grads, **head_grads}
    profiler.run("optimizer", lambda s, l, g: apply_gradients(s, l, g, optimizer, jnp.float32(learning_rate),
                                                              frozen_mask), state, loss, grads)
    return profiler.rows()


def format_profile(rows: list[dict], ceiling_gflops: float) -> str:
    """A text table of StageProfiler.rows() with each stage's GFLOP/s as a share of the ceiling, and the total."""
    lines = [f"{'stage':<26}{'seconds':>9}{'share':>8}{'GFLOP':>10}{'GFLOP/s':>10}{'of ceiling':>12}"]
    for row in rows:
        lines.append(f"{row['stage']:<26}{row['seconds']:>9.3f}{row['share']:>8.1%}{row['gflop']:>10.1f}"
                     f"{row['gflops']:>10.1f}{row['gflops'] / ceiling_gflops:>12.1%}")
    seconds, gflop = sum(row["seconds"] for row in rows), sum(row["gflop"] for row in rows)
    lines.append(f"{'sum of stages':<26}{seconds:>9.3f}{1:>8.1%}{gflop:>10.1f}{gflop / seconds:>10.1f}"
                 f"{gflop / seconds / ceiling_gflops:>12.1%}")
    return "\n".join(lines)


def synthetic_training_batch(batch_size: int, canvas: tuple[int, int], num_classes: int, max_instances: int,
                             mask_size: int, seed: int = 0) -> dict:
    """A training batch in the data pipeline's schema with random content, for timing where no data is
    at hand: uint8 images [B, Hc, Wc, 3] of noise filling the canvas, half of the M slots holding boxes of
    1/8 to 1/2 the canvas side with random classes and random box-cropped masks [B, M, Sm, Sm]."""
    rng = np.random.default_rng(seed)
    height, width = canvas
    count = max(1, max_instances // 2)
    sides = rng.uniform(0.125, 0.5, (batch_size, max_instances, 2)) * np.array([width, height])
    corners = rng.uniform(0, 1, (batch_size, max_instances, 2)) * (np.array([width, height]) - sides)
    return {
        "image": jnp.asarray(rng.integers(0, 256, (batch_size, height, width, 3), dtype=np.uint8)),
        "image_size": jnp.asarray(np.tile(np.array(canvas, np.int32), (batch_size, 1))),
        "gt_boxes": jnp.asarray(np.concatenate([corners, corners + sides], axis=-1).astype(np.float32)),
        "gt_classes": jnp.asarray(rng.integers(1, num_classes, (batch_size, max_instances), dtype=np.int32)),
        "gt_masks": jnp.asarray(rng.integers(0, 2, (batch_size, max_instances, mask_size, mask_size), dtype=np.uint8)),
        "gt_valid": jnp.asarray(np.tile(np.arange(max_instances) < count, (batch_size, 1))),
        "valid": jnp.ones(batch_size, bool),
    }


def train_speed(config, canvas: tuple[int, int], batch_size: int, runs: int, learning_rate: float = 1e-3,
                profile: bool = False) -> dict:
    """Training images/s of our step alone (the trainer's `train_step_fn`, jitted with donation) on a
    synthetic batch [batch_size, *canvas] shaped as the config's pipeline makes it (max instances,
    mask side), random parameters, SGD momentum 0.9 and weight decay 1e-4; the config's model
    (e.g. --config.model.dtype=bfloat16). Median step of `runs` after one warm-up step.

    Returns {"device", "dtype", "canvas", "batch", "compile_s", "step_s", "images_per_s", "gflop"
    (XLA's count for the step), "gflops", "runs_s"} and, with profile, "profile" (profile_train_step's rows).
    """
    model, spec = build_model(config), spec_from_config(config)
    params = init_params(model, jax.random.key(0))
    frozen = frozen_parameter_mask(params, trainable_backbone_layers=config.train.trainable_backbone_layers,
                                   norm=model.norm)
    optimizer = sgd_without_learning_rate(frozen, momentum=0.9, weight_decay=1e-4)
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params),
                       key=jax.random.key_data(jax.random.key(0)))
    batch = synthetic_training_batch(batch_size, canvas, spec.num_classes, config.data.max_instances,
                                     config.data.mask_size)
    step = train_step_fn(make_loss_fn(model, spec), optimizer, lambda _: jnp.float32(learning_rate), frozen)
    start = time.perf_counter()
    compiled = jax.jit(step, donate_argnums=0).lower(state, batch).compile()
    compile_s = time.perf_counter() - start
    flops = compiled_flops(compiled)
    times = []
    for _ in range(runs + 1):  # the first is the warm-up
        start = time.perf_counter()
        state, metrics = compiled(state, batch)
        jax.block_until_ready(metrics["loss"])
        times.append(time.perf_counter() - start)
    step_s = statistics.median(times[1:])
    result = {"device": jax.devices()[0].device_kind, "dtype": str(model.dtype), "canvas": list(canvas),
              "batch": batch_size, "compile_s": compile_s, "step_s": step_s, "images_per_s": batch_size / step_s,
              "gflop": flops / 1e9, "gflops": flops / 1e9 / step_s, "runs_s": times[1:]}
    if profile:
        result["profile"] = profile_train_step(model, spec, state, batch, optimizer, learning_rate, frozen)
    return result


def inference_speed(config, canvas: tuple[int, int], batch_sizes: tuple[int, ...], runs: int) -> list[dict]:
    """Our jitted `predict` alone (no host preprocessing, no pasting) on noise images filling the
    canvas, random parameters, the config's model; per batch size: {"batch", "compile_s", "seconds"
    (median of `runs` after a warm-up), "ms_per_image", "images_per_s"}."""
    model, spec = build_model(config), spec_from_config(config)
    params = init_params(model, jax.random.key(0))
    predict = make_predict_fn(model, spec)
    rows = []
    for batch_size in batch_sizes:
        sizes = jnp.asarray(np.tile(np.array(canvas, np.int32), (batch_size, 1)))
        images = jax.random.normal(jax.random.key(batch_size), (batch_size, *canvas, 3), jnp.float32)
        batch = {"image": images, "image_size": sizes, "original_size": sizes}
        start = time.perf_counter()
        compiled = predict.lower(params, batch).compile()
        compile_s = time.perf_counter() - start
        seconds = median_seconds(compiled, (params, batch), runs)
        rows.append({"batch": batch_size, "compile_s": compile_s, "seconds": seconds,
                     "ms_per_image": 1000 * seconds / batch_size, "images_per_s": batch_size / seconds})
    return rows
