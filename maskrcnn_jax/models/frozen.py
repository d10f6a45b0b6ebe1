"""Which parameters a trainer must not update: frozen BatchNorm constants and frozen early stages."""

from flax import traverse_util

# torchvision's order: trainable_layers = n unfreezes the first n names of this tuple.
BACKBONE_LAYERS_FROM_TOP = ("layer4", "layer3", "layer2", "layer1", "conv1")
NORM_LEAVES = ("scale", "bias", "mean", "var")


def frozen_parameter_mask(params: dict, trainable_backbone_layers: int = 3) -> dict:
    """Tree of bools like `params`: True for leaves to keep fixed (e.g. `optax.masked` / `multi_transform`).

    Frozen: every FrozenBatchNorm leaf (bn*, downsample_bn) and the backbone parts outside the top
    `trainable_backbone_layers` of (layer4, layer3, layer2, layer1, conv1), as torchvision. 3 freezes
    the stem (conv1) and layer1.
    """
    trainable = BACKBONE_LAYERS_FROM_TOP[:trainable_backbone_layers]
    flat = traverse_util.flatten_dict(params)
    mask = {}
    for path in flat:
        in_backbone = path[0] == "backbone"
        is_norm = in_backbone and ("bn" in path[-2]) and path[-1] in NORM_LEAVES
        # The stem's norm ("bn1") is a norm, so it is frozen whatever the stage rule says.
        frozen_stage = in_backbone and path[1] not in trainable
        mask[path] = bool(is_norm or frozen_stage)
    return traverse_util.unflatten_dict(mask)
