"""torchvision `maskrcnn_resnet50_fpn` state_dict -> our parameter tree (numpy only; no torch import).

Every parameter our model expects is looked up under torchvision's name, its layout converted
(OIHW conv -> HWIO, [out, in] linear -> [in, out], fc6's CHW flattening -> HWC, transposed-conv
kernel flipped), and its shape checked. Both the current key names and the older ones that
torchvision's own loader upgrades (e.g. `rpn.head.conv.weight`, `mask_head.mask_fcn1.weight`)
are accepted.
"""

from typing import Callable, Mapping

import numpy as np

IGNORED_SUFFIXES = ("num_batches_tracked",)
NORM_NAMES = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}
# A state_dict from any Mask R-CNN has these; used to tell a wrong file from an incomplete one.
SIGNATURE_KEYS = ("roi_heads.mask_predictor.mask_fcn_logits.weight", "rpn.head.cls_logits.weight")


def flatten_tree(tree: Mapping, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], object]:
    """{"a": {"b": x}} -> {("a", "b"): x}."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(flatten_tree(value, prefix + (key,)))
        else:
            flat[prefix + (key,)] = value
    return flat


def unflatten_tree(flat: Mapping[tuple[str, ...], object]) -> dict:
    """{("a", "b"): x} -> {"a": {"b": x}}."""
    tree = {}
    for path, value in flat.items():
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return tree


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
    """fc6 [out, C*S*S] (torch flattens C, H, W) -> [S*S*C, out] (we flatten H, W, C)."""
    out_features, in_features = weight.shape
    side = int(round((in_features / channels) ** 0.5))
    if side * side * channels != in_features or expected_shape != (in_features, out_features):
        raise ConversionError(f"roi_heads.box_head.fc6.weight: shape {weight.shape} does not fit expected {expected_shape[::-1]}")
    return weight.reshape(out_features, channels, side, side).transpose(2, 3, 1, 0).reshape(in_features, out_features)


def torchvision_names(path: tuple[str, ...]) -> tuple[list[str], Callable[[np.ndarray], np.ndarray]]:
    """Candidate torchvision keys (current name first) and the layout conversion for one of our parameter paths."""
    *modules, leaf = path
    if leaf == "kernel":
        suffix, convert = "weight", conv_kernel
    elif modules[0] == "backbone" and leaf in NORM_NAMES and "bn" in modules[-1]:
        suffix, convert = NORM_NAMES[leaf], lambda x: x
    else:
        suffix, convert = leaf, lambda x: x
    top = modules[0]
    if top == "backbone":
        parts = [m.replace("downsample_conv", "downsample.0").replace("downsample_bn", "downsample.1") for m in modules[1:]]
        return ["backbone.body." + ".".join(parts) + "." + suffix], convert
    if top == "fpn":
        kind, index = modules[1].split("_")
        base = f"backbone.fpn.{kind}_blocks.{index}"
        return [f"{base}.0.{suffix}", f"{base}.{suffix}"], convert
    if top == "rpn_head":
        name = modules[1]
        if name == "conv":
            return [f"rpn.head.conv.0.0.{suffix}", f"rpn.head.conv.{suffix}"], convert
        return [f"rpn.head.{name}.{suffix}"], convert
    if top in ("box_mlp", "box_predictor"):
        group = "box_head" if top == "box_mlp" else "box_predictor"
        dense = dense_kernel if leaf == "kernel" else convert
        return [f"roi_heads.{group}.{modules[1]}.{suffix}"], dense
    if top == "mask_convs":
        index = int(modules[1].removeprefix("mask_fcn"))
        return [f"roi_heads.mask_head.{index - 1}.0.{suffix}", f"roi_heads.mask_head.{modules[1]}.{suffix}"], convert
    if top == "mask_predictor":
        if modules[1] == "conv5_mask" and leaf == "kernel":
            convert = transposed_conv_kernel
        return [f"roi_heads.mask_predictor.{modules[1]}.{suffix}"], convert
    raise ConversionError(f"no torchvision name known for parameter {'/'.join(path)}")


def convert_state_dict(state_dict: Mapping[str, np.ndarray], expected_params: dict, fpn_channels: int = 256) -> dict:
    """Our parameter tree, shaped like `expected_params` (a tree of arrays or ShapeDtypeStructs).

    state_dict maps torchvision keys to numpy arrays. Raises ConversionError for a file that is not a
    Mask R-CNN state_dict, for missing or unexpected keys, and for shape mismatches (all listed at once).
    """
    if not all(key in state_dict for key in SIGNATURE_KEYS):
        sample = ", ".join(list(state_dict)[:5]) or "(empty)"
        raise ConversionError(
            f"this is not a torchvision Mask R-CNN state_dict: keys {SIGNATURE_KEYS} are absent (first keys: {sample})"
        )
    converted, missing, mismatched, used = {}, [], [], set()
    for path, expected in flatten_tree(expected_params).items():
        names, convert = torchvision_names(path)
        name = next((candidate for candidate in names if candidate in state_dict), None)
        if name is None:
            missing.append(names[0])
            continue
        used.add(name)
        weight = np.asarray(state_dict[name], np.float32)
        if path[:2] == ("box_mlp", "fc6") and path[-1] == "kernel":
            try:
                value = flattened_roi_dense_kernel(weight, tuple(expected.shape), fpn_channels)
            except ConversionError as error:
                mismatched.append(str(error))
                continue
        else:
            value = convert(weight)
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
    return unflatten_tree(converted)
