"""Mask R-CNN as one Flax module whose pieces are applied separately.

Legend: B batch, H W image, R RoIs, S RoI output size, C channels, A anchors per location,
K classes including background. Feature maps are NHWC.

Only the learned layers live here; anchors, proposals, RoIAlign, post-processing and the losses are
plain functions outside Flax (`maskrcnn_jax.detector`, `maskrcnn_jax.ops`), so a head can be swapped
without touching them. Call a piece with `model.apply({"params": params}, x, method="features")`
(or "rpn", "box_head", "mask_head"; `method=MaskRCNN.features` works too).
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from maskrcnn_jax.models.box_head import BoxPredictor, ConvFCHead, TwoMLPHead
from maskrcnn_jax.models.fpn import FPN
from maskrcnn_jax.models.mask_head import MaskHead, MaskPredictor
from maskrcnn_jax.models.resnet import ResNet
from maskrcnn_jax.models.rpn_head import RPNHead


ARCHITECTURES = ("v1", "v2")
# What is rematerialised in the backward pass (jax.checkpoint: a module's activations are recomputed
# instead of kept): "backbone" each ResNet bottleneck, "all" also the FPN, the RPN head and the box
# and mask heads' layers. Values and gradients are unchanged; memory falls, compute grows.
REMAT_CHOICES = ("none", "backbone", "all")


def _rematerialised(module_class, enabled: bool, static_argnums: tuple[int, ...] = ()):
    """module_class, or when enabled its nn.remat (static_argnums count `self` as 0: the `train` flag)."""
    return nn.remat(module_class, static_argnums=static_argnums) if enabled else module_class


class MaskRCNN(nn.Module):
    """ResNet-FPN backbone, RPN head, box head (+ predictor), mask head (+ predictor).

    architecture "v1" (torchvision's maskrcnn_resnet50_fpn): frozen BatchNorm in the backbone, a
    1-conv RPN head, TwoMLPHead, a mask head without norm. Parameter tree: backbone/{conv1,bn1,
    layer1/0/conv1,...}, fpn/{inner_i,layer_i}, rpn_head/{conv,cls_logits,bbox_pred}, box_mlp/{fc6,fc7},
    box_predictor/{cls_score,bbox_pred}, mask_convs/mask_fcn1..4, mask_predictor/{conv5_mask,mask_fcn_logits}.
    architecture "v2" (maskrcnn_resnet50_fpn_v2): BatchNorm (models.norm, eps `bn_eps`) in the backbone,
    after every FPN conv (fpn/{inner_bn_i,layer_bn_i}) and every mask-head conv (mask_convs/mask_bn1..4),
    a 2-conv RPN head (rpn_head/conv_1 added), and ConvFCHead (box_conv_fc/{conv1..4,bn1..4,fc})
    in place of box_mlp.

    dtype: the compute dtype of every convolution and dense layer (e.g. jnp.bfloat16); parameters,
    BatchNorm math and the heads' outputs (objectness, box deltas, class logits, mask logits)
    stay float32, so the losses reduce in float32. The features are in `dtype`.
    fast_convs: the convolutions of models.conv that are faster on XLA:CPU (values and gradients
    equal); False runs lax.conv_general_dilated everywhere. remat: REMAT_CHOICES. None of these
    changes the parameter tree.
    train / valid (v2's BatchNorm, for the training side): train=True normalises with batch
    statistics; valid (bool over the RoI batch shape, True for real RoIs) leaves padding RoIs out of them.
    With v1 they change nothing.
    """

    num_classes: int = 91
    stage_sizes: Sequence[int] = (3, 4, 6, 3)
    stem_width: int = 64
    bn_eps: float = 1e-5
    fpn_channels: int = 256
    num_anchors: int = 3
    representation_size: int = 1024
    mask_head_channels: int = 256
    box_head_channels: int = 256
    box_roi_size: int = 7
    mask_roi_size: int = 14
    dtype: Any = jnp.float32
    fast_convs: bool = True
    architecture: str = "v1"
    remat: str = "none"

    @property
    def norm(self) -> str:
        """The backbone's norm layers, as `frozen_parameter_mask` takes it: "frozen" (v1) or "batch" (v2)."""
        return "batch" if self.architecture == "v2" else "frozen"

    def setup(self):
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {self.architecture!r}; expected one of {ARCHITECTURES}")
        if self.remat not in REMAT_CHOICES:
            raise ValueError(f"unknown remat {self.remat!r}; expected one of {REMAT_CHOICES}")
        v2 = self.architecture == "v2"
        convs = dict(dtype=self.dtype, fast_convs=self.fast_convs)
        heads = self.remat == "all"
        self.backbone = ResNet(self.stage_sizes, self.stem_width, self.bn_eps, norm=self.norm,
                               remat=self.remat != "none", **convs)
        self.fpn = _rematerialised(FPN, heads, (2,))(self.fpn_channels, norm=v2, bn_eps=self.bn_eps, **convs)
        self.rpn_head = _rematerialised(RPNHead, heads)(self.num_anchors, num_convs=2 if v2 else 1, **convs)
        if v2:
            self.box_conv_fc = _rematerialised(ConvFCHead, heads, (3,))(
                self.box_head_channels, representation_size=self.representation_size, bn_eps=self.bn_eps, **convs)
        else:
            self.box_mlp = _rematerialised(TwoMLPHead, heads)(self.representation_size, dtype=self.dtype)
        self.box_predictor = BoxPredictor(self.num_classes, dtype=self.dtype)
        self.mask_convs = _rematerialised(MaskHead, heads, (3,))(self.mask_head_channels, norm=v2,
                                                                 bn_eps=self.bn_eps, **convs)
        self.mask_predictor = MaskPredictor(self.num_classes, **convs)

    def features(self, images: jax.Array, train: bool = False) -> list[jax.Array]:
        """images [B, H, W, 3] normalised -> [P2, P3, P4, P5, P6], each [B, H/s, W/s, C] in `dtype`, s = 4..64."""
        return self.fpn(self.backbone(images, train), train)

    def rpn(self, features: Sequence[jax.Array]) -> tuple[list[jax.Array], list[jax.Array]]:
        """Per level: objectness logits [B, H_l, W_l, A] and box deltas [B, H_l, W_l, A * 4]."""
        return self.rpn_head(features)

    def box_head(self, roi_features: jax.Array, valid: jax.Array | None = None,
                 train: bool = False) -> tuple[jax.Array, jax.Array]:
        """roi_features [..., S, S, C], valid bool [...] -> (class_logits [..., K], box_deltas [..., K, 4])."""
        if self.architecture == "v2":
            representation = self.box_conv_fc(roi_features, valid, train)
        else:
            representation = self.box_mlp(roi_features)
        return self.box_predictor(representation)

    def mask_head(self, roi_features: jax.Array, valid: jax.Array | None = None, train: bool = False,
                  classes: jax.Array | None = None) -> jax.Array:
        """roi_features [..., S, S, C], valid bool [...] -> mask logits [..., 2S, 2S, K]; with classes
        int [...], each RoI's class channel only: [..., 2S, 2S]."""
        batch_shape = roi_features.shape[:-3]
        flat = roi_features.reshape((-1,) + roi_features.shape[-3:])
        flat_valid = None if valid is None else valid.reshape(-1)
        flat_classes = None if classes is None else classes.reshape(-1)
        logits = self.mask_predictor(self.mask_convs(flat, flat_valid, train), flat_classes)
        return logits.reshape(batch_shape + logits.shape[1:])

    def __call__(self, images: jax.Array) -> dict[str, jax.Array]:
        """Runs every piece once (RoI inputs are zeros) so that `init` creates all parameters."""
        features = self.features(images)
        objectness, box_deltas = self.rpn(features)
        channels = features[0].shape[-1]
        class_logits, _ = self.box_head(jnp.zeros((1, self.box_roi_size, self.box_roi_size, channels)))
        mask_logits = self.mask_head(jnp.zeros((1, self.mask_roi_size, self.mask_roi_size, channels)))
        return {"objectness": objectness, "box_deltas": box_deltas, "class_logits": class_logits, "mask_logits": mask_logits}
