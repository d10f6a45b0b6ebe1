"""The train state: one pytree of arrays that holds everything a step changes, created sharded.

Built the big_vision way: `jax.eval_shape` of the initialiser gives the state's shapes without
computing anything, `mesh.state_shardings` places each leaf, and the initialiser is jitted with
those `out_shardings`, so every array is born where it lives.
"""

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from maskrcnn_jax.training import mesh as mesh_lib


class TrainState(NamedTuple):
    """step: int32 scalar, batches consumed so far; params: the model's parameter tree; opt_state:
    the optax state of `optimizer.sgd_without_learning_rate`; key: uint32 key data of the run's root key
    (each step uses fold_in(key, step))."""

    step: jax.Array
    params: Any
    opt_state: optax.OptState
    key: jax.Array


def make_state_initializer(init_params: Callable[[jax.Array], Any],
                           optimizer: optax.GradientTransformation) -> Callable[[jax.Array], TrainState]:
    """seed key -> TrainState at step 0; `init_params(key)` draws the parameters.

    The parameters draw from one half of the seed key, steps from the other.
    """

    def initialize(seed_key):
        params_key, steps_key = jax.random.split(seed_key)
        params = init_params(params_key)
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params),
                          key=jax.random.key_data(steps_key))

    return initialize


def abstract_train_state(initialize: Callable[[jax.Array], TrainState], mesh: Mesh) -> TrainState:
    """The state's shapes and dtypes as ShapeDtypeStructs carrying their shardings (nothing computed);
    the target an Orbax restore fills."""
    shapes = jax.eval_shape(initialize, jax.random.key(0))
    shardings = mesh_lib.state_shardings(shapes, mesh)
    return jax.tree.map(lambda shape, sharding: jax.ShapeDtypeStruct(shape.shape, shape.dtype, sharding=sharding),
                        shapes, shardings)


def create_train_state(initialize: Callable[[jax.Array], TrainState], seed: int, mesh: Mesh) -> TrainState:
    """The step-0 state computed directly into its shardings (the same on every process)."""
    shardings = jax.tree.map(lambda leaf: leaf.sharding, abstract_train_state(initialize, mesh))
    return jax.jit(initialize, out_shardings=shardings)(jax.random.key(seed))


def replace_params(state: TrainState, params, optimizer: optax.GradientTransformation, mesh: Mesh) -> TrainState:
    """`state` with other parameters (e.g. loaded for fine-tuning) and the optimizer state reset for them.

    params: host or device arrays with the shapes and dtypes of state.params.
    """
    shardings = mesh_lib.state_shardings(state, mesh)
    params = jax.device_put(params, shardings.params)
    opt_state = jax.jit(optimizer.init, out_shardings=shardings.opt_state)(params)
    return state._replace(params=params, opt_state=opt_state)
