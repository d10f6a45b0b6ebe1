"""Starting parameters from an earlier model (config.init): a converted torchvision checkpoint or a
training workdir, the whole model or only its backbone.

Modes: "none" (random, the default), "backbone" (the ResNet body `backbone/...` only; FPN and heads
random), "all" (every parameter). With another class count the box and mask predictors keep their
random initialisation (fine-tuning to a new dataset, as torchvision's fine-tuning tutorial and
matterport's balloon example do).
"""

import os
import pathlib

import jax
import numpy as np
from absl import logging

from maskrcnn_jax import checkpoint as converted_checkpoint
from maskrcnn_jax.training import checkpoints
from maskrcnn_jax.trees import flatten_dict, unflatten_dict

MODES = ("none", "backbone", "all")
BACKBONE_SUBTREES = ("backbone",)
# The class-dependent layers: re-initialised when the class count differs.
PREDICTOR_SUBTREES = ("box_predictor", "mask_predictor")


def read_params(path: str | os.PathLike) -> dict:
    """Parameters (numpy) of a training workdir (its latest checkpoint) or of a converted checkpoint directory."""
    if checkpoints.checkpoint_directory(path).is_dir():
        return checkpoints.latest_params(path)[0]
    return converted_checkpoint.load_params(path)


def num_class_slots(params: dict) -> int:
    """K, from the classifier's output width (box_predictor/cls_score/kernel [F, K])."""
    return int(np.shape(params["box_predictor"]["cls_score"]["kernel"])[-1])


def merge_initial_params(random_params: dict, loaded: dict, mode: str) -> dict:
    """`random_params` with the subtrees that `mode` takes replaced by `loaded`'s (host numpy).

    Raises ValueError naming every missing leaf or shape mismatch among the taken subtrees.
    """
    if mode not in MODES:
        raise ValueError(f"config.init.mode {mode!r} is not one of {MODES}")
    if mode == "none":
        return random_params
    subtrees = set(BACKBONE_SUBTREES) if mode == "backbone" else set(random_params)
    if mode == "all" and num_class_slots(loaded) != num_class_slots(random_params):
        logging.info("init: %d class slots in the checkpoint, %d in the config: box and mask predictors stay random",
                     num_class_slots(loaded), num_class_slots(random_params))
        subtrees -= set(PREDICTOR_SUBTREES)
    target, source = flatten_dict(random_params), flatten_dict(loaded)
    problems, merged = [], {}
    for path, value in target.items():
        if path[0] not in subtrees:
            merged[path] = value
        elif path not in source:
            problems.append(f"{'/'.join(path)}: missing in the checkpoint")
        elif np.shape(source[path]) != np.shape(value):
            problems.append(f"{'/'.join(path)}: checkpoint {np.shape(source[path])}, model {np.shape(value)}")
        else:
            merged[path] = np.asarray(source[path], dtype=value.dtype)
    if problems:
        raise ValueError("config.init.checkpoint does not fit the model:\n  " + "\n  ".join(problems))
    return unflatten_dict(merged)


def initial_params(random_params, init_checkpoint: str, mode: str):
    """The parameters to start from: `random_params` (device arrays) merged with the checkpoint at
    `init_checkpoint` per `mode`, as host numpy; None when mode is "none" (keep the random ones)."""
    if mode == "none":
        return None
    if not init_checkpoint:
        raise ValueError(f"config.init.mode is {mode!r} but config.init.checkpoint is empty")
    path = pathlib.Path(init_checkpoint)
    loaded = read_params(path)
    host_random = jax.tree.map(lambda leaf: np.asarray(leaf.addressable_data(0)), random_params)
    logging.info("init: %s parameters from %s", mode, path)
    return merge_initial_params(host_random, loaded, mode)
