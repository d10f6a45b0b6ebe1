"""Seeded random parameters for a model, without compiling its init (slow on 2 cores), and its
backbone as a classification ResNet state_dict."""

import jax
import numpy as np
from flax.traverse_util import flatten_dict

from maskrcnn_jax.models import init_params


def random_params(model, seed: int = 0) -> dict:
    """Parameters of the model's shapes: He-scaled kernels, zero biases, identity FrozenBatchNorm statistics."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(lambda: init_params(model, jax.random.key(0)))

    def fill(path, leaf):
        name = path[-1].key
        if name in ("scale", "var"):
            return np.ones(leaf.shape, np.float32)
        if name == "kernel":
            return (rng.normal(size=leaf.shape) * np.sqrt(2.0 / np.prod(leaf.shape[:-1]))).astype(np.float32)
        return np.zeros(leaf.shape, np.float32)

    return jax.tree_util.tree_map_with_path(fill, shapes)


# torchvision's BatchNorm2d names of our norm leaves, and the ranges the stand-in draws them from.
TORCH_NORM_NAMES = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}
NORM_RANGES = {"scale": (0.5, 1.5), "bias": (-0.1, 0.1), "mean": (-0.1, 0.1), "var": (0.5, 2.0)}


def classification_resnet_state_dict(model, seed: int = 0, num_classes: int = 10) -> dict[str, np.ndarray]:
    """The model's backbone as a torchvision classification ResNet state_dict (`layer1.0.downsample.1.
    running_var`, OIHW kernels, an `fc` classifier): a small stand-in for ImageNet weights.

    He-scaled kernels; BatchNorm weights and statistics drawn away from torchvision's 1/0/0/1 defaults
    (NORM_RANGES), so that loading them is visible. The names are written out here, not taken from
    the converter, whose mapping the torchvision parity tests check.
    """
    rng = np.random.default_rng(seed)
    state_dict = {}
    for path, value in flatten_dict(random_params(model, seed)["backbone"]).items():
        *modules, leaf = path
        name = ".".join(modules).replace("downsample_conv", "downsample.0").replace("downsample_bn", "downsample.1")
        if leaf == "kernel":
            state_dict[f"{name}.weight"] = np.ascontiguousarray(value.transpose(3, 2, 0, 1))
        else:
            drawn = rng.uniform(*NORM_RANGES[leaf], value.shape)
            state_dict[f"{name}.{TORCH_NORM_NAMES[leaf]}"] = drawn.astype(np.float32)
    features = state_dict["layer4.0.conv3.weight"].shape[0]  # C5's channels
    state_dict["fc.weight"] = (0.01 * rng.normal(size=(num_classes, features))).astype(np.float32)
    state_dict["fc.bias"] = np.zeros(num_classes, np.float32)
    return state_dict
