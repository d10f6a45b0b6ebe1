"""torchvision `maskrcnn_resnet50_fpn` (v1) or `maskrcnn_resnet50_fpn_v2` state_dict -> a
self-describing checkpoint of our parameters.

Every parameter our model expects is looked up under torchvision's name, its layout converted
(OIHW conv -> HWIO, [out, in] linear -> [in, out], the box head's first linear layer's CHW
flattening -> HWC, transposed-conv kernel flipped), and its shape checked. Both the current key
names and the older ones that torchvision's own loader upgrades (e.g. `rpn.head.conv.weight`,
`mask_head.mask_fcn1.weight`) are accepted. Only `read_state_dict` needs torch (imported when it runs).
The name mapping (`torchvision_names`, whose ResNet names without the "backbone.body." prefix are a
classification ResNet's) and the lookup (`convert_leaves`) also serve `backbone.py`.

The architecture is read from the keys (`state_dict_architecture`: v2's box head is
FastRCNNConvFCHead, `roi_heads.box_head.0.0.weight`, where v1 has `roi_heads.box_head.fc6.weight`)
and recorded in the checkpoint's config (`model.architecture`).

BatchNorm eps is not stored in a state_dict, so the converter decides it and records it in the
checkpoint's config (`model.backbone.bn_eps`, used by every norm layer):
  * v2: torchvision builds every norm as BatchNorm2d, pretrained or not: eps 1e-5;
  * v1 with BatchNorm2d buffers (`num_batches_tracked`): a model built with weights=None (random,
    or trained by you from scratch) normalises with eps 1e-5;
  * v1 with FrozenBatchNorm2d buffers only: torchvision's pretrained COCO_V1 weights use eps 0.0; a
    model fine-tuned from them with another eps needs it given explicitly.
"""

import dataclasses
import os
import re
from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from maskrcnn_jax.checkpoint import save_checkpoint
from maskrcnn_jax.detector.coco_classes import COCO_CLASS_NAMES
from maskrcnn_jax.models import build_model

IGNORED_SUFFIXES = ("num_batches_tracked",)
BATCHNORM2D_EPS = 1e-5  # torch.nn.BatchNorm2d's default
COCO_V1_FROZEN_BN_EPS = 0.0  # torchvision's pretrained FrozenBatchNorm2d
NORM_NAMES = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}
# A state_dict from any Mask R-CNN has these; used to tell a wrong file from an incomplete one.
SIGNATURE_KEYS = ("roi_heads.mask_predictor.mask_fcn_logits.weight", "rpn.head.cls_logits.weight")
V1_BOX_HEAD_KEY = "roi_heads.box_head.fc6.weight"  # TwoMLPHead
V2_BOX_HEAD_KEY = "roi_heads.box_head.0.0.weight"  # FastRCNNConvFCHead's first conv
MASK_RCNN_BODY_PREFIX = "backbone.body."  # torchvision's ResNet inside its Mask R-CNN
CLASSIFICATION_RESNET_KEY = "layer1.0.conv1.weight"  # torchvision's and timm's ResNets, on their own


class ConversionError(ValueError):
    """The state_dict cannot become parameters for this model (wrong file, missing keys, bad shapes)."""


def conv_kernel(weight: np.ndarray) -> np.ndarray:
    """torch conv weight [O, I, kh, kw] -> flax kernel [kh, kw, I, O]."""
    return weight.transpose(2, 3, 1, 0)


def transposed_conv_kernel(weight: np.ndarray) -> np.ndarray:
    """torch ConvTranspose2d weight [I, O, kh, kw] -> flax ConvTranspose kernel [kh, kw, I, O] (spatially flipped)."""
    return weight[:, :, ::-1, ::-1].transpose(2, 3, 0, 1)


def dense_kernel(weight: np.ndarray) -> np.ndarray:
    """torch Linear weight [out, in] -> flax Dense kernel [in, out]."""
    return weight.T


def flattened_roi_dense_kernel(weight: np.ndarray, expected_shape: tuple[int, ...], channels: int) -> np.ndarray:
    """The box head's first linear layer (v1 fc6, v2 box_head.5) [out, C*S*S] (torch flattens C, H, W)
    -> [S*S*C, out] (we flatten H, W, C)."""
    out_features, in_features = weight.shape
    side = int(round((in_features / channels) ** 0.5))
    if side * side * channels != in_features or expected_shape != (in_features, out_features):
        raise ConversionError(f"shape {weight.shape} does not fit expected {expected_shape[::-1]}")
    return weight.reshape(out_features, channels, side, side).transpose(2, 3, 1, 0).reshape(in_features, out_features)


@dataclasses.dataclass(frozen=True)
class ModelLayout:
    """What the name mapping needs to know about our parameter tree beyond one path.

    norm_modules: paths of the norm layers (modules with a `mean` leaf); box_head_convs: the number
    of convs of v2's box head (its linear layer follows them and torch's Flatten); roi_channels:
    the channels of the map the box head's first linear layer flattens.
    """

    norm_modules: frozenset
    box_head_convs: int
    roi_channels: int


def model_layout(flat_params: Mapping[tuple[str, ...], object], fpn_channels: int) -> ModelLayout:
    """ModelLayout of a flattened parameter tree (arrays or ShapeDtypeStructs)."""
    norm_modules = frozenset(path[:-1] for path in flat_params if path[-1] == "mean")
    box_convs = sorted(path[1] for path in flat_params if path[0] == "box_conv_fc" and path[1].startswith("conv"))
    roi_channels = flat_params[("box_conv_fc", box_convs[-1], "kernel")].shape[-1] if box_convs else fpn_channels
    return ModelLayout(norm_modules, len(box_convs), roi_channels)


def torchvision_names(path: tuple[str, ...], layout: ModelLayout,
                      body_prefix: str = MASK_RCNN_BODY_PREFIX) -> tuple[list[str], Callable[[np.ndarray], np.ndarray]]:
    """Candidate torchvision keys (current name first) and the layout conversion for one of our parameter paths.

    body_prefix: what precedes torchvision's ResNet names (`layer1.0.conv1.weight`) in the state_dict:
    "backbone.body." in a Mask R-CNN, "" in a classification ResNet.
    """
    *modules, leaf = path
    is_norm = tuple(modules) in layout.norm_modules
    if leaf == "kernel":
        suffix, convert = "weight", conv_kernel
    elif is_norm:
        suffix, convert = NORM_NAMES[leaf], lambda x: x
    else:
        suffix, convert = leaf, lambda x: x
    top = modules[0]
    if top == "backbone":
        parts = [m.replace("downsample_conv", "downsample.0").replace("downsample_bn", "downsample.1") for m in modules[1:]]
        return [body_prefix + ".".join(parts) + "." + suffix], convert
    if top == "fpn":
        kind, index = modules[1].split("_")[0], modules[1].split("_")[-1]
        base = f"backbone.fpn.{kind}_blocks.{index}"
        if is_norm:
            return [f"{base}.1.{suffix}"], convert
        return [f"{base}.0.{suffix}", f"{base}.{suffix}"], convert
    if top == "rpn_head":
        name = modules[1]
        if name.startswith("conv"):
            index = int(name.removeprefix("conv").removeprefix("_") or 0)
            older = [f"rpn.head.conv.{suffix}"] if index == 0 else []
            return [f"rpn.head.conv.{index}.0.{suffix}", *older], convert
        return [f"rpn.head.{name}.{suffix}"], convert
    if top in ("box_mlp", "box_predictor"):
        group = "box_head" if top == "box_mlp" else "box_predictor"
        dense = dense_kernel if leaf == "kernel" else convert
        return [f"roi_heads.{group}.{modules[1]}.{suffix}"], dense
    if top == "box_conv_fc":
        if modules[1] == "fc":  # torch's Sequential: the conv blocks, Flatten, then the Linear
            dense = dense_kernel if leaf == "kernel" else convert
            return [f"roi_heads.box_head.{layout.box_head_convs + 1}.{suffix}"], dense
        index = int(modules[1].removeprefix("conv").removeprefix("bn")) - 1
        return [f"roi_heads.box_head.{index}.{1 if is_norm else 0}.{suffix}"], convert
    if top == "mask_convs":
        index = int(modules[1].removeprefix("mask_fcn").removeprefix("mask_bn"))
        if is_norm:
            return [f"roi_heads.mask_head.{index - 1}.1.{suffix}"], convert
        return [f"roi_heads.mask_head.{index - 1}.0.{suffix}", f"roi_heads.mask_head.{modules[1]}.{suffix}"], convert
    if top == "mask_predictor":
        if modules[1] == "conv5_mask" and leaf == "kernel":
            convert = transposed_conv_kernel
        return [f"roi_heads.mask_predictor.{modules[1]}.{suffix}"], convert
    raise ConversionError(f"no torchvision name known for parameter {'/'.join(path)}")


def check_is_mask_rcnn(state_dict: Mapping[str, np.ndarray]) -> None:
    """ConversionError unless the state_dict has the keys of every torchvision Mask R-CNN."""
    absent = [key for key in SIGNATURE_KEYS if key not in state_dict]
    if absent:
        sample = ", ".join(list(state_dict)[:5]) or "(empty)"
        hint = ("; it looks like a classification ResNet: scripts/convert_backbone.py converts it into a backbone "
                "checkpoint" if CLASSIFICATION_RESNET_KEY in state_dict else "")
        raise ConversionError(
            f"this is not a torchvision Mask R-CNN state_dict: {', '.join(absent)} "
            f"{'is' if len(absent) == 1 else 'are'} absent (first keys: {sample}){hint}"
        )


def state_dict_architecture(state_dict: Mapping[str, np.ndarray]) -> tuple[str, str]:
    """("v1" or "v2", why) from the box head's keys; ConversionError for anything else."""
    check_is_mask_rcnn(state_dict)
    if V2_BOX_HEAD_KEY in state_dict:
        return "v2", f"{V2_BOX_HEAD_KEY} present: FastRCNNConvFCHead, torchvision's maskrcnn_resnet50_fpn_v2"
    if V1_BOX_HEAD_KEY in state_dict:
        return "v1", f"{V1_BOX_HEAD_KEY} present: TwoMLPHead, torchvision's maskrcnn_resnet50_fpn"
    raise ConversionError(f"cannot tell the architecture: neither {V1_BOX_HEAD_KEY} (v1) nor {V2_BOX_HEAD_KEY} (v2) is present")


def convert_state_dict(state_dict: Mapping[str, np.ndarray], expected_params: dict, fpn_channels: int = 256) -> dict:
    """Our parameter tree, shaped like `expected_params` (a tree of arrays or ShapeDtypeStructs).

    state_dict maps torchvision keys to numpy arrays. Raises ConversionError for a file that is not a
    Mask R-CNN state_dict, for one of the other architecture, for missing or unexpected keys, and for
    shape mismatches (all listed at once).
    """
    found, why = state_dict_architecture(state_dict)
    expected_architecture = "v2" if "box_conv_fc" in expected_params else "v1"
    if found != expected_architecture:
        raise ConversionError(f"the state_dict is {found} ({why}) but the model is {expected_architecture}: "
                              f"set config.model.architecture = {found!r}")
    flat_expected = flatten_dict(expected_params)
    layout = model_layout(flat_expected, fpn_channels)

    def names(path, expected):
        candidates, convert = torchvision_names(path, layout)
        if path[0] in ("box_mlp", "box_conv_fc") and path[1] in ("fc6", "fc") and path[-1] == "kernel":
            shape, channels = tuple(expected.shape), layout.roi_channels
            return candidates, lambda weight: flattened_roi_dense_kernel(weight, shape, channels)
        return candidates, convert

    return unflatten_dict(convert_leaves(state_dict, flat_expected, names))


def convert_leaves(state_dict: Mapping[str, np.ndarray], flat_expected: Mapping[tuple[str, ...], object],
                   names: Callable[[tuple[str, ...], object], tuple[list[str], Callable[[np.ndarray], np.ndarray]]]
                   ) -> dict[tuple[str, ...], np.ndarray]:
    """{path: converted array} for every path of `flat_expected` (arrays or ShapeDtypeStructs).

    names(path, expected) -> (candidate state_dict keys, current name first; the layout conversion,
    which may raise ConversionError). Every state_dict key must be used, but for IGNORED_SUFFIXES.
    Raises ConversionError listing all missing keys, shape mismatches and unexpected keys at once.
    """
    converted, missing, mismatched, used = {}, [], [], set()
    for path, expected in flat_expected.items():
        candidates, convert = names(path, expected)
        name = next((candidate for candidate in candidates if candidate in state_dict), None)
        if name is None:
            missing.append(candidates[0])
            continue
        used.add(name)
        weight = np.asarray(state_dict[name], np.float32)
        try:
            value = convert(weight)
        except ConversionError as error:
            mismatched.append(f"{name}: {error}")
            continue
        if value.shape != tuple(expected.shape):
            mismatched.append(f"{name}: torchvision shape {weight.shape} converts to {value.shape}, model expects {tuple(expected.shape)}")
            continue
        converted[path] = np.ascontiguousarray(value)
    unexpected = sorted(key for key in state_dict if key not in used and not key.endswith(IGNORED_SUFFIXES))
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys: {', '.join(missing)}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches (check config.model, e.g. num_classes or backbone depth): " + "; ".join(mismatched))
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {', '.join(unexpected)}")
    if problems:
        raise ConversionError("cannot convert the state_dict: " + " | ".join(problems))
    return converted


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """torch.load(weights_only=True) -> {key: float32 numpy}; a {"model": state_dict} wrapper is unwrapped.

    weights_only=True unpickles only tensors and plain containers, never arbitrary objects.
    """
    import pickle

    import torch  # only reading .pth files needs torch

    if os.path.isdir(path):
        raise ConversionError(f"{path} is a directory; give the .pth file")
    if not os.path.isfile(path):
        raise ConversionError(f"no file at {path}")
    if os.path.getsize(path) == 0:
        raise ConversionError(f"{path} is empty")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's message suggests weights_only=False (arbitrary code execution); keep only the cause.
        found = re.search(r"WeightsUnpickler error:\s*([^\n]+?)(?: was not an allowed global|\n|$)", str(error))
        cause = found.group(1).strip() if found else "not a pickle of tensors"
        if cause.startswith("Unsupported global"):
            raise ConversionError(
                f"{path} holds Python objects besides tensors ({cause}), which are not loaded: if you trust the "
                "file, load the model in torch yourself and torch.save(model.state_dict(), 'model.pth'), then "
                "convert that"
            ) from error
        raise ConversionError(f"{path} is not a torch checkpoint torch.load can read ({cause})") from error
    except Exception as error:  # torch raises many types for files that are not torch checkpoints
        message = " ".join(str(error).split())[:200]
        raise ConversionError(f"{path} is not a torch checkpoint torch.load can read ({type(error).__name__}: "
                              f"{message or 'no detail'})") from error
    if isinstance(loaded, dict) and isinstance(loaded.get("model"), dict):
        loaded = loaded["model"]
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise ConversionError(f"{path} does not hold a state_dict (a dict of tensors), but {type(loaded).__name__}")
    return {key: value.detach().float().numpy() for key, value in loaded.items()}


def batchnorm_eps(state_dict: Mapping[str, np.ndarray], bn_eps: float | None = None,
                  architecture: str = "v1") -> tuple[float, str]:
    """(eps, why) for the BatchNorm layers (see the module docstring); an explicit bn_eps wins."""
    if bn_eps is not None:
        return bn_eps, "as given"
    if architecture == "v2":
        return BATCHNORM2D_EPS, "torchvision's v2 builds every norm as BatchNorm2d, pretrained or not"
    if any(key.endswith("num_batches_tracked") for key in state_dict):
        return BATCHNORM2D_EPS, "BatchNorm2d buffers (num_batches_tracked): a model built with weights=None"
    return COCO_V1_FROZEN_BN_EPS, (
        "FrozenBatchNorm2d buffers only: torchvision's COCO_V1 weights; a model fine-tuned with another eps needs --bn_eps"
    )


@dataclasses.dataclass(frozen=True)
class Conversion:
    """What `convert_torchvision_checkpoint` wrote."""

    num_parameters: int
    bn_eps: float
    bn_eps_reason: str
    architecture: str
    architecture_reason: str


def convert_torchvision_checkpoint(
    state_dict_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    config: ml_collections.ConfigDict,
    class_names: Sequence[str] | None = None,
    bn_eps: float | None = None,
) -> Conversion:
    """Converts a torchvision Mask R-CNN .pth into a checkpoint directory (`maskrcnn_jax.checkpoint`)
    holding the parameters, `config` with the architecture found by `state_dict_architecture` and the
    BatchNorm eps decided by `batchnorm_eps`, and the class names.

    class_names: [K] names, index = label, index 0 the background; by default COCO's for a 91-slot
    model (torchvision's COCO head), required otherwise. Raises ConversionError (nothing written).
    """
    num_classes = config.model.num_classes
    if class_names is None:
        if num_classes != len(COCO_CLASS_NAMES):
            raise ConversionError(f"a model with {num_classes} class slots needs its class names: "
                                  f"{num_classes - 1} names for labels 1..{num_classes - 1} (--class_names=a,b,...)")
        class_names = COCO_CLASS_NAMES
    if len(class_names) != num_classes:
        raise ConversionError(f"{len(class_names)} class names for a model with {num_classes} class slots")
    state_dict = read_state_dict(state_dict_path)
    architecture, architecture_reason = state_dict_architecture(state_dict)
    eps, reason = batchnorm_eps(state_dict, bn_eps, architecture)
    config = config.copy_and_resolve_references()
    with config.unlocked():  # a config written before `architecture` existed lacks the key
        config.model.architecture = architecture
    config.model.backbone.bn_eps = eps
    model = build_model(config)
    expected = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3), jnp.float32))["params"]
    params = convert_state_dict(state_dict, expected, fpn_channels=config.model.fpn_channels)
    save_checkpoint(output_dir, params, config, class_names)
    count = sum(leaf.size for leaf in jax.tree_util.tree_leaves(params))
    return Conversion(num_parameters=count, bn_eps=eps, bn_eps_reason=reason, architecture=architecture,
                      architecture_reason=architecture_reason)
