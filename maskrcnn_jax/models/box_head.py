"""Box branch of the RoI heads: TwoMLPHead and the class / box-delta predictor.

Legend: R RoIs, S RoI output size (7), C channels, K classes including background.
"""

import flax.linen as nn
import jax


class TwoMLPHead(nn.Module):
    """Flatten (row, column, channel order) -> fc6 -> ReLU -> fc7 -> ReLU.

    roi_features: [..., S, S, C] -> [..., representation_size].
    """

    representation_size: int = 1024

    @nn.compact
    def __call__(self, roi_features: jax.Array) -> jax.Array:
        x = roi_features.reshape(roi_features.shape[:-3] + (-1,))
        x = nn.relu(nn.Dense(self.representation_size, name="fc6")(x))
        return nn.relu(nn.Dense(self.representation_size, name="fc7")(x))


class BoxPredictor(nn.Module):
    """Class logits and per-class box deltas (torchvision FastRCNNPredictor).

    x: [..., representation_size] -> (class_logits [..., K], box_deltas [..., K, 4]).
    """

    num_classes: int

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        class_logits = nn.Dense(self.num_classes, kernel_init=nn.initializers.normal(0.01), name="cls_score")(x)
        box_deltas = nn.Dense(4 * self.num_classes, kernel_init=nn.initializers.normal(0.001), name="bbox_pred")(x)
        return class_logits, box_deltas.reshape(box_deltas.shape[:-1] + (self.num_classes, 4))
