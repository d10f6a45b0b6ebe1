"""Which parameters a trainer must not update: BatchNorm constants and frozen early stages."""

from flax import traverse_util

from maskrcnn_jax.models.resnet import NORM_KINDS

# torchvision's order: trainable_layers = n unfreezes the first n names of this tuple.
BACKBONE_LAYERS_FROM_TOP = ("layer4", "layer3", "layer2", "layer1", "conv1")
NORM_LEAVES = ("scale", "bias", "mean", "var")
STATISTICS_LEAVES = ("mean", "var")


def frozen_parameter_mask(params: dict, trainable_backbone_layers: int = 3, norm: str = "frozen") -> dict:
    """Tree of bools like `params`: True for leaves to keep fixed (e.g. `optax.masked` / `multi_transform`).

    A norm layer is a module with a `mean` leaf (FrozenBatchNorm and BatchNorm both have one).
    Frozen: the backbone parts outside the top `trainable_backbone_layers` of (layer4, layer3, layer2,
    layer1, conv1), as torchvision (3 freezes the stem conv1/bn1 and layer1), and
      norm "frozen" (v1's FrozenBatchNorm): every norm leaf;
      norm "batch" (v2's BatchNorm): every `mean` / `var` leaf (statistics, replaced by the running
      update, never by gradients); `scale` / `bias` train outside the frozen stages, heads included.
    """
    if norm not in NORM_KINDS:
        raise ValueError(f"unknown norm {norm!r}; expected one of {NORM_KINDS}")
    trainable = BACKBONE_LAYERS_FROM_TOP[:trainable_backbone_layers]
    flat = traverse_util.flatten_dict(params)
    frozen_leaves = NORM_LEAVES if norm == "frozen" else STATISTICS_LEAVES
    mask = {}
    for path in flat:
        is_norm = path[:-1] + ("mean",) in flat
        # The stem's norm (backbone/bn1) trains with the stem conv1, as torchvision's trainable_layers=5.
        stage = "conv1" if path[1] == "bn1" else path[1]
        frozen_stage = path[0] == "backbone" and stage not in trainable
        mask[path] = bool((is_norm and path[-1] in frozen_leaves) or frozen_stage)
    return traverse_util.unflatten_dict(mask)
