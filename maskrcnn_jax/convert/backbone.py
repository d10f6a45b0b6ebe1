"""ImageNet classification ResNet-50 / ResNet-101 state_dict (torchvision or timm) -> a self-describing
backbone checkpoint (`maskrcnn_jax.checkpoint.save_backbone_checkpoint`), the start of a COCO run
with config.init.mode = "backbone".

torchvision's `resnet50` / `resnet101` (e.g. IMAGENET1K_V1 `resnet50-0676ba61.pth`, IMAGENET1K_V2
`resnet50-11ad3fa6.pth`) and timm's `resnet50` / `resnet101` name their parameters alike: `conv1`,
`bn1`, `layer1..4.<block>.{conv1..3, bn1..3, downsample.0, downsample.1}` and the classifier `fc`.
Each parameter of the config's backbone is looked up under that name (the Mask R-CNN converter's
mapping, without its "backbone.body." prefix), converted (OIHW -> HWIO) and shape-checked; `fc` is
dropped; BatchNorm weights and running statistics are kept (frozen in v1, trained on in v2).

What the weights are is recorded with them (`describe`): architecture (models.resnet.ARCHITECTURE),
depth and blocks per stage, stem width, BatchNorm eps (1e-5: torch's BatchNorm2d, which both libraries
train these ResNets with, and torchvision's FrozenBatchNorm2d default when its Mask R-CNN is built on
them), the source file and its sha256, and the input the weights expect (`IMAGENET_INPUT`).
`training.initialization` refuses a checkpoint whose record does not fit the model or the pipeline.

Not read: detectron2's MSRA `R-50.pkl` (BGR in 0-255, std folded into conv1, stride on the 1x1 conv,
other names), basic-block ResNet-18/34, and variants with another stem (timm's resnet50d).
"""

import dataclasses
import hashlib
import os
import pathlib
from typing import Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from maskrcnn_jax.checkpoint import save_backbone_checkpoint
from maskrcnn_jax.convert.torchvision import (
    BATCHNORM2D_EPS,
    CLASSIFICATION_RESNET_KEY,
    MASK_RCNN_BODY_PREFIX,
    ConversionError,
    convert_leaves,
    model_layout,
    read_state_dict,
    torchvision_names,
)
from maskrcnn_jax.models import build_model
from maskrcnn_jax.models.build import backbone_stage_sizes
from maskrcnn_jax.models.resnet import ARCHITECTURE, bottleneck_resnet_depth, resnet_stage_sizes

# What torchvision's and timm's ImageNet ResNets take (their evaluation transforms' ToTensor + Normalize).
IMAGENET_INPUT = {"channels": "RGB", "range": [0.0, 1.0], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
CLASSIFIER_PREFIX = "fc."  # the ImageNet classifier: dropped
STATE_DICT_FORMAT = "torchvision / timm classification ResNet state_dict"
# Keys only a detection model has (torchvision's Mask R-CNN and its relatives).
DETECTION_PREFIXES = (MASK_RCNN_BODY_PREFIX, "roi_heads.", "rpn.")


def resnet_name(stage_sizes: tuple[int, ...]) -> str:
    """Its name, e.g. ResNet-50 (blocks per stage (3, 4, 6, 3))."""
    return f"ResNet-{bottleneck_resnet_depth(stage_sizes)} (blocks per stage {tuple(stage_sizes)})"


def _depth_hint(stage_sizes: tuple[int, ...]) -> str:
    """How to make the config fit a bottleneck ResNet of `stage_sizes`."""
    depth = bottleneck_resnet_depth(stage_sizes)
    try:
        supported = resnet_stage_sizes(depth) == stage_sizes
    except ValueError:
        supported = False
    if supported:
        return f"add --config.model.backbone.depth={depth} here and when training"
    return (f"config.model.backbone.stage_sizes={tuple(stage_sizes)} builds that backbone (not one of the "
            "standard depths)")


def classification_resnet_stages(state_dict: Mapping[str, np.ndarray], expected: tuple[int, ...]) -> tuple[int, ...]:
    """Blocks per stage of a torchvision-named bottleneck classification ResNet, which must be `expected`.

    Raises ConversionError, one line saying what was found and what was expected, for a detection
    model's state_dict, a file that is not such a ResNet, basic blocks, or other blocks per stage.
    """
    wanted = f"an ImageNet classification {resnet_name(expected)}"
    detection_keys = [key for key in state_dict if key.startswith(DETECTION_PREFIXES)]
    if detection_keys:
        raise ConversionError(
            f"this is a Mask R-CNN state_dict ({detection_keys[0]}, ...), not {wanted}: convert it with "
            "scripts/convert_torchvision.py (a converted model's backbone also loads with config.init.mode=backbone)")
    if "conv1.weight" not in state_dict or CLASSIFICATION_RESNET_KEY not in state_dict:
        sample = ", ".join(list(state_dict)[:5]) or "(empty)"
        raise ConversionError(f"this is not a torchvision / timm ResNet state_dict (conv1.weight and "
                              f"{CLASSIFICATION_RESNET_KEY} absent; first keys: {sample}); expected {wanted}")
    found = tuple(len({key.split(".")[1] for key in state_dict if key.startswith(f"layer{stage}.")})
                  for stage in range(1, 5))
    if "layer1.0.conv3.weight" not in state_dict:  # BasicBlock: two 3x3 convs, depth 2 per block
        raise ConversionError(f"this is a ResNet-{2 * sum(found) + 2} of basic blocks (layer1.0.conv3.weight absent), "
                              f"not {wanted}: only bottleneck ResNets are supported")
    if found != tuple(expected):
        raise ConversionError(f"this is a {resnet_name(found)}, not {wanted} (the config's backbone): "
                              f"{_depth_hint(found)}")
    return found


def convert_resnet_state_dict(state_dict: Mapping[str, np.ndarray], expected_backbone: dict) -> dict:
    """{"backbone": our ResNet tree} from a classification ResNet's state_dict (numpy arrays), `fc` dropped.

    expected_backbone: the model's params["backbone"] (arrays or ShapeDtypeStructs). Raises
    ConversionError listing missing keys, shape mismatches (e.g. another stem width) and unexpected keys.
    """
    body = {key: value for key, value in state_dict.items() if not key.startswith(CLASSIFIER_PREFIX)}
    flat_expected = flatten_dict({"backbone": expected_backbone})
    layout = model_layout(flat_expected, fpn_channels=0)  # only its norm layers matter: no box head here
    leaves = convert_leaves(body, flat_expected,
                            lambda path, expected: torchvision_names(path, layout, body_prefix=""))
    return unflatten_dict(leaves)


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def describe(stage_sizes: tuple[int, ...], stem_width: int, source_path: str | os.PathLike) -> dict:
    """The backbone checkpoint's record of what its weights are (JSON-serialisable)."""
    return {
        "architecture": ARCHITECTURE,
        "depth": bottleneck_resnet_depth(stage_sizes),
        "stage_sizes": list(stage_sizes),
        "stem_width": int(stem_width),
        "bn_eps": BATCHNORM2D_EPS,
        "source": {"file": pathlib.Path(source_path).name, "sha256": sha256_of(source_path),
                   "format": STATE_DICT_FORMAT},
        "input": IMAGENET_INPUT,
    }


@dataclasses.dataclass(frozen=True)
class BackboneConversion:
    """What `convert_backbone_checkpoint` wrote: the checkpoint's description, its parameter count,
    and the state_dict keys it dropped (the classifier)."""

    description: dict
    num_parameters: int
    dropped: tuple[str, ...]


def convert_backbone_checkpoint(state_dict_path: str | os.PathLike, output_dir: str | os.PathLike,
                                config: ml_collections.ConfigDict) -> BackboneConversion:
    """Converts a classification ResNet .pth into a backbone checkpoint directory for the backbone
    of `config`'s model (depth or stage_sizes, stem_width). Raises ConversionError (nothing written)."""
    state_dict = read_state_dict(state_dict_path)
    stage_sizes = classification_resnet_stages(state_dict, backbone_stage_sizes(config.model.backbone))
    model = build_model(config)
    expected = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3), jnp.float32))["params"]
    params = convert_resnet_state_dict(state_dict, expected["backbone"])
    description = describe(stage_sizes, state_dict["conv1.weight"].shape[0], state_dict_path)
    save_backbone_checkpoint(output_dir, params, description)
    return BackboneConversion(
        description=description,
        num_parameters=sum(leaf.size for leaf in jax.tree_util.tree_leaves(params)),
        dropped=tuple(sorted(key for key in state_dict if key.startswith(CLASSIFIER_PREFIX))),
    )
