"""What a training run compiles, built from the config in one place: the trainer runs it, and the
compile report (`training.compile_report`) compiles exactly it for a TPU topology ahead of time.

Legend: B global batch, Hc Wc canvas, M max GT instances, Sm GT mask side.
"""

from typing import Any, Callable, NamedTuple

import jax
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh

from maskrcnn_jax.data.pipeline import padding_example
from maskrcnn_jax.models import build_model, frozen_parameter_mask, init_params, platform_config
from maskrcnn_jax.training import mesh as mesh_lib
from maskrcnn_jax.training.optimizer import LearningRateFn, learning_rate_schedule, sgd_without_learning_rate
from maskrcnn_jax.training.state import TrainState, abstract_train_state, make_state_initializer
from maskrcnn_jax.training.step import LossFn, TrainStep, make_train_step

LossFnFactory = Callable[[ml_collections.ConfigDict], LossFn]


class TrainingProgram(NamedTuple):
    """model: the Flax module; frozen_mask: bool tree like the parameters (True: never updated);
    optimizer: the update direction (`optimizer.sgd_without_learning_rate`); learning_rate_fn: step -> rate;
    initialize: seed key -> TrainState at step 0; abstract_state: its ShapeDtypeStructs with their
    shardings over the mesh; train_step: the jitted, donated `make_train_step`."""

    model: Any
    frozen_mask: Any
    optimizer: optax.GradientTransformation
    learning_rate_fn: LearningRateFn
    initialize: Callable[[jax.Array], TrainState]
    abstract_state: TrainState
    train_step: TrainStep


def optimizer_from_config(train: ml_collections.ConfigDict, frozen_mask) -> tuple[optax.GradientTransformation,
                                                                                  LearningRateFn]:
    """(update direction, learning-rate function) from config.train."""
    optimizer = sgd_without_learning_rate(frozen_mask, momentum=train.momentum, weight_decay=train.weight_decay,
                                          clip_norm=train.clip_norm)
    learning_rate_fn = learning_rate_schedule(
        base_learning_rate=train.base_learning_rate, num_steps=train.num_steps, warmup_steps=train.warmup_steps,
        warmup_factor=train.warmup_factor, schedule=train.schedule, decay_steps=tuple(train.decay_steps),
        decay_factor=train.decay_factor)
    return optimizer, learning_rate_fn


def training_program(config: ml_collections.ConfigDict, mesh: Mesh, loss_fn_factory: LossFnFactory) -> TrainingProgram:
    """The model, optimizer, state layout and jitted step that `config` trains over `mesh`; nothing is
    computed (the state's shapes come from `jax.eval_shape`). Platform-dependent choices ("auto"
    dtype, RoIAlign's boxes per step) are made for the mesh's devices (`models.platform_config`)."""
    config = platform_config(config, mesh.devices.flat[0].platform)
    model = build_model(config)
    init_model_params = lambda key: init_params(model, key)  # noqa: E731
    frozen_mask = frozen_parameter_mask(jax.eval_shape(init_model_params, jax.random.key(0)),
                                        config.train.trainable_backbone_layers, norm=model.norm)
    optimizer, learning_rate_fn = optimizer_from_config(config.train, frozen_mask)
    initialize = make_state_initializer(init_model_params, optimizer)
    abstract_state = abstract_train_state(initialize, mesh)
    train_step = make_train_step(loss_fn_factory(config), optimizer, learning_rate_fn, frozen_mask, abstract_state,
                                 mesh)
    return TrainingProgram(model, frozen_mask, optimizer, learning_rate_fn, initialize, abstract_state, train_step)


def training_canvases(config: ml_collections.ConfigDict) -> list[tuple[int, int]]:
    """The training canvases (Hc, Wc), one compiled step each: config.data.canvases (e.g. one per
    orientation, ((800, 1344), (1344, 800)) in the COCO recipe), or when empty
    [config.input.canvas_size], the evaluation canvas."""
    canvases = [tuple(int(side) for side in canvas) for canvas in (config.data.get("canvases") or
                                                                    (config.input.canvas_size,))]
    for canvas in canvases:
        if len(canvas) != 2 or min(canvas) < 1:
            raise ValueError(f"config.data.canvases {canvases}: each canvas must be two positive sides (H, W)")
    if len(set(canvases)) != len(canvases):
        raise ValueError(f"config.data.canvases {canvases} lists a canvas twice")
    return canvases


def abstract_training_batch(config: ml_collections.ConfigDict, mesh: Mesh, global_batch_size: int,
                            canvas_size: tuple[int, int]) -> dict:
    """The global batch the data pipeline feeds the step, as ShapeDtypeStructs split over the mesh's
    data axis: {"image" [B,Hc,Wc,3], "image_size" [B,2], "gt_boxes" [B,M,4], "gt_masks" [B,M,Sm,Sm], ...}."""
    example = padding_example(canvas_size=tuple(canvas_size), max_instances=config.data.max_instances,
                              mask_size=config.data.mask_size)
    sharding = mesh_lib.batch_sharding(mesh, mesh_lib.DATA_AXIS)
    return {name: jax.ShapeDtypeStruct((global_batch_size, *np.shape(value)), np.asarray(value).dtype, sharding=sharding)
            for name, value in example.items()}
