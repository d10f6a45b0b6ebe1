"""Starting parameters from an earlier model (config.init): ImageNet weights converted into a backbone
checkpoint (scripts/convert_backbone.py), a converted torchvision checkpoint or a training workdir,
the whole model or only its backbone.

Modes: "none" (random), "backbone" (the ResNet body `backbone/...` only; FPN and heads random: the
published COCO recipes start from an ImageNet ResNet), "all" (every parameter). With another class
count the box and mask predictors keep their random initialisation (fine-tuning to a new dataset, as
torchvision's fine-tuning tutorial and matterport's balloon example do).

A backbone checkpoint records what its weights are; it is refused, naming each field, when its
architecture, blocks per stage, stem width or BatchNorm eps differ from config.model.backbone, or
when the input it expects is not what the pipeline feeds (`PIPELINE_INPUT`): training on inputs the
weights were not trained for fails silently otherwise.
"""

import jax
import ml_collections
import numpy as np
from absl import logging
from etils import epath
from flax.traverse_util import flatten_dict, unflatten_dict

from maskrcnn_jax.checkpoint import describe_backbone, describe_input, load_backbone_description, load_params
from maskrcnn_jax.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from maskrcnn_jax.models.build import backbone_stage_sizes
from maskrcnn_jax.models.resnet import ARCHITECTURE, bottleneck_resnet_depth
from maskrcnn_jax.training.progress import say

MODES = ("none", "backbone", "all")
BACKBONE_SUBTREES = ("backbone",)
# The class-dependent layers: re-initialised when the class count differs.
PREDICTOR_SUBTREES = ("box_predictor", "mask_predictor")
# What the input pipeline feeds the model (data.transforms.normalize_image: RGB photos / 255, minus
# mean, over std), in a backbone checkpoint's terms.
PIPELINE_INPUT = {"channels": "RGB", "range": [0.0, 1.0], "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
# Where to get ImageNet weights, for the message when config.init.checkpoint is missing.
IMAGENET_RESNET50_URL = "https://download.pytorch.org/models/resnet50-0676ba61.pth"


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


def _same_input(recorded: dict, fed: dict) -> bool:
    """The same channel order and value range, and mean / std equal to float32 precision."""
    try:
        return (recorded.get("channels") == fed["channels"] and list(recorded.get("range")) == fed["range"]
                and np.allclose(recorded.get("mean"), fed["mean"], rtol=1e-6, atol=0)
                and np.allclose(recorded.get("std"), fed["std"], rtol=1e-6, atol=0))
    except (TypeError, ValueError):  # a record without the fields, or of other lengths
        return False


def check_backbone_fits(description: dict, backbone: ml_collections.ConfigDict, path: epath.Path) -> None:
    """Raises ValueError (one line, every differing field named) unless the backbone checkpoint's
    `description` fits config.model.backbone (`backbone`) and the pipeline's input."""
    stage_sizes = backbone_stage_sizes(backbone)
    recorded_stages = tuple(description.get("stage_sizes") or ())
    problems = []
    if description.get("architecture") != ARCHITECTURE:
        problems.append(f"architecture: checkpoint {description.get('architecture')}, model {ARCHITECTURE}")
    if recorded_stages != stage_sizes:
        problems.append(f"blocks per stage: checkpoint {recorded_stages} (ResNet-{description.get('depth')}), "
                        f"config.model.backbone {stage_sizes} (ResNet-{bottleneck_resnet_depth(stage_sizes)})")
    if description.get("stem_width") != backbone.stem_width:
        problems.append(f"stem width: checkpoint {description.get('stem_width')}, "
                        f"config.model.backbone.stem_width {backbone.stem_width}")
    if description.get("bn_eps") != backbone.bn_eps:
        problems.append(f"BatchNorm eps: checkpoint {description.get('bn_eps')} (its statistics were trained with "
                        f"it), config.model.backbone.bn_eps {backbone.bn_eps}")
    if not _same_input(description.get("input") or {}, PIPELINE_INPUT):
        problems.append(f"input: the weights expect {describe_input(description.get('input') or {})}, the "
                        f"pipeline feeds {describe_input(PIPELINE_INPUT)}; refusing to train on inputs the "
                        "weights were not trained for")
    if problems:
        raise ValueError(f"the backbone checkpoint {path} does not fit the config: " + "; ".join(problems))


def missing_backbone_message(init_checkpoint: str) -> str:
    """What to do when config.init.mode is "backbone" and config.init.checkpoint names nothing."""
    where = f"{init_checkpoint} does not exist" if init_checkpoint else "is empty"
    output = init_checkpoint or "DIR"
    return (f"config.init.mode is 'backbone' but config.init.checkpoint {where}: convert ImageNet ResNet weights "
            f"first (e.g. torchvision's {IMAGENET_RESNET50_URL}) with `python scripts/convert_backbone.py --input "
            f"resnet50-0676ba61.pth --output {output}` and pass --config.init.checkpoint={output}, or train from "
            "scratch with --config.init.mode=none")


def check_init_checkpoint(init_checkpoint: str, mode: str) -> None:
    """ValueError (missing_backbone_message) when mode "backbone" names no checkpoint that exists: the
    trainer asks before it reads any data, so that a fresh run without its ImageNet weights stops at once."""
    if mode == "backbone" and not (init_checkpoint and epath.Path(init_checkpoint).exists()):
        raise ValueError(missing_backbone_message(init_checkpoint))


def initial_params(random_params, init_checkpoint: str, mode: str, backbone: ml_collections.ConfigDict):
    """The parameters to start from: `random_params` (device arrays) merged with the checkpoint at
    `init_checkpoint` per `mode`, as host numpy; None when mode is "none" (keep the random ones).

    backbone: config.model.backbone, which a backbone checkpoint must fit (`check_backbone_fits`).
    Says on stdout what was loaded.
    """
    if mode == "none":
        return None
    check_init_checkpoint(init_checkpoint, mode)
    if not init_checkpoint:
        raise ValueError(f"config.init.mode is {mode!r} but config.init.checkpoint is empty")
    path = epath.Path(init_checkpoint)  # a local path or a URI (gs://)
    description = load_backbone_description(path)
    if description is not None and mode != "backbone":
        raise ValueError(f"config.init.checkpoint {path} is a backbone checkpoint ({describe_backbone(description)}), "
                         f"which starts the backbone only: set --config.init.mode=backbone, not {mode!r}")
    if description is not None:
        check_backbone_fits(description, backbone, path)
    loaded = load_params(path)  # a checkpoint directory or a training workdir's latest step
    host_random = jax.tree.map(lambda leaf: np.asarray(leaf.addressable_data(0)), random_params)
    merged = merge_initial_params(host_random, loaded, mode)
    if description is not None:
        count = sum(leaf.size for leaf in jax.tree.leaves(merged["backbone"]))
        say(f"init: backbone {describe_backbone(description)}: {count:,} parameters from {path} into backbone/; "
            "FPN and heads random")
    else:
        say(f"init: {mode} parameters from {path}")
    return merged
