"""Saving and loading a parameter tree with Orbax (the model's `params` collection only)."""

import os

import jax
import numpy as np
import orbax.checkpoint as ocp


def save_params(directory: str | os.PathLike, params: dict) -> None:
    """Writes `params` (a nested dict of arrays) as an Orbax checkpoint; `directory` must not exist yet."""
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(os.path.abspath(directory), params)
    checkpointer.wait_until_finished()


def load_params(directory: str | os.PathLike) -> dict:
    """Reads a tree written by `save_params`; leaves come back as numpy arrays on the host."""
    path = os.path.abspath(directory)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"no checkpoint directory at {path}")
    restored = ocp.StandardCheckpointer().restore(path)
    return jax.tree_util.tree_map(np.asarray, restored)
