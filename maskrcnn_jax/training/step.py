"""The jitted train step: loss and gradients, the non-finite guard, the optax update.

A loss function is `loss_fn(params, batch, key) -> (loss float32 scalar, metrics {name: scalar})`,
pure and jittable, with the batch as `data.global_batch` places it (B = the global batch):
{"image" uint8 [B,Hc,Wc,3], "image_size" int32 [B,2], "gt_boxes" float32 [B,M,4], "gt_classes"
int32 [B,M], "gt_masks" uint8 [B,M,Sm,Sm], "gt_valid" bool [B,M], "valid" bool [B], ...}.
It must average over the global batch, so that the result does not depend on how many devices
share it. A model with BatchNorm also returns metrics["norm_statistics"]: its new running statistics
as a partial tree of `params` (e.g. {"fpn": {"inner_0_norm": {"mean": .., "var": ..}}}), which the
step writes into the parameters (the frozen mask keeps the optimizer off those leaves).
"""

from typing import Callable

import jax
import jax.numpy as jnp
import optax
from flax.traverse_util import flatten_dict, unflatten_dict
from jax.sharding import Mesh

from maskrcnn_jax.detector.spec import NORM_STATISTICS
from maskrcnn_jax.training import mesh as mesh_lib
from maskrcnn_jax.training.optimizer import LearningRateFn
from maskrcnn_jax.training.state import TrainState

LossFn = Callable[[dict, dict, jax.Array], tuple[jax.Array, dict]]
TrainStep = Callable[[TrainState, dict], tuple[TrainState, dict]]


def with_statistics(params, statistics: dict):
    """`params` with the leaves that `statistics` (a partial tree of the same paths) holds replaced."""
    if not statistics:
        return params
    flat, updates = flatten_dict(params), flatten_dict(statistics)
    unknown = sorted(set(updates) - set(flat))
    if unknown:
        raise ValueError(f"norm statistics for leaves the parameters lack, e.g. {'/'.join(unknown[0])}")
    return unflatten_dict({**flat, **updates})


def trainable_gradients(grads, frozen_mask):
    """grads with the frozen leaves (frozen_mask True) replaced by zeros: XLA then does not compute them."""
    return jax.tree.map(lambda g, frozen: jnp.zeros_like(g) if frozen else g, grads, frozen_mask)


def apply_gradients(state: TrainState, loss: jax.Array, grads, optimizer: optax.GradientTransformation,
                    learning_rate: jax.Array, frozen_mask, statistics: dict | None = None) -> tuple[TrainState, dict]:
    """The update after the backward pass: (state with step + 1, {"grad_norm", "skipped"}).

    Frozen gradients are dropped, the optimizer's direction is applied with `learning_rate`, the
    BatchNorm `statistics` (see the module docstring) replace their leaves; when the loss or a
    trainable gradient is not finite the parameters and optimizer state stay as they were.
    """
    trainable_grads = trainable_gradients(grads, frozen_mask)  # neither used nor checked
    grad_norm = optax.tree.norm(trainable_grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    direction, opt_state = optimizer.update(trainable_grads, state.opt_state, state.params)
    params = jax.tree.map(lambda p, d: p - learning_rate * d.astype(p.dtype), state.params, direction)
    params = with_statistics(params, statistics or {})
    keep_if_finite = lambda new, old: jnp.where(finite, new, old)  # noqa: E731
    new_state = TrainState(
        step=state.step + 1,
        params=jax.tree.map(keep_if_finite, params, state.params),
        opt_state=jax.tree.map(keep_if_finite, opt_state, state.opt_state),
        key=state.key,
    )
    return new_state, {"grad_norm": grad_norm, "skipped": jnp.logical_not(finite).astype(jnp.int32)}


def train_step_fn(loss_fn: LossFn, optimizer: optax.GradientTransformation, learning_rate_fn: LearningRateFn,
                  frozen_mask) -> TrainStep:
    """The pure step: (state, batch) -> (state with step + 1, metrics).

    metrics: the loss function's metrics plus "loss", "learning_rate", "grad_norm" (global norm of
    the trainable gradients) and "skipped" (1 when the loss or a gradient is not finite: then the
    parameters and optimizer state stay as they were; the step and the data still move on).
    """

    def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        step_key = jax.random.fold_in(jax.random.wrap_key_data(state.key), state.step)
        (loss, loss_metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch, step_key)
        loss_metrics = dict(loss_metrics)
        statistics = loss_metrics.pop(NORM_STATISTICS, {})
        learning_rate = learning_rate_fn(state.step)
        new_state, update_metrics = apply_gradients(state, loss, grads, optimizer, learning_rate, frozen_mask,
                                                    statistics)
        metrics = {**loss_metrics, "loss": loss, "learning_rate": learning_rate, **update_metrics}
        return new_state, metrics

    return train_step


def make_train_step(loss_fn: LossFn, optimizer: optax.GradientTransformation, learning_rate_fn: LearningRateFn,
                    frozen_mask, abstract_state: TrainState, mesh: Mesh) -> TrainStep:
    """`train_step(state, batch) -> (state, metrics)` jitted over `mesh`; the input state is donated.

    The state keeps the shardings of `abstract_state` (see `mesh.state_shardings`), the batch is
    split over the data axis, metrics come back replicated. Compiles once per batch shape.
    """
    state_shardings = jax.tree.map(lambda leaf: leaf.sharding, abstract_state)
    return jax.jit(train_step_fn(loss_fn, optimizer, learning_rate_fn, frozen_mask),
                   in_shardings=(state_shardings, mesh_lib.batch_sharding(mesh, mesh_lib.DATA_AXIS)),
                   out_shardings=(state_shardings, mesh_lib.replicated(mesh)),
                   donate_argnums=0)
