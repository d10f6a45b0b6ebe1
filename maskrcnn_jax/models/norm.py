"""BatchNorm with torch's semantics, its running statistics kept in the `params` tree.

Legend: C channels. x is [..., C] (NHWC maps or [R, S, S, C] RoI features).

The leaves are those of FrozenBatchNorm (`scale`, `bias`, `mean`, `var`), so the converter,
checkpoints and predict code treat both alike. `mean` and `var` are statistics, not weights: no
gradient reaches them (models.frozen_parameter_mask freezes them); a training step replaces them
with the values this module writes into the "norm_statistics" collection.

train=True normalises with the statistics of the batch, as torch.nn.BatchNorm2d in train mode:
biased variance for the output, running updates `(1 - momentum) * old + momentum * batch` with
the unbiased variance. Under `jax.jit` over a device mesh the mean over the batch is the mean over
the global batch, so this is torch's SyncBatchNorm across the mesh's devices without any axis name.
Padding (padding images, unused RoI slots) is left out through `valid`.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from maskrcnn_jax.detector.spec import NORM_STATISTICS


class BatchNorm(nn.Module):
    """y = (x - mean) / sqrt(var + eps) * scale + bias, computed in float32, returned in x's dtype.

    __call__(x [..., C], train=False, valid=None) -> [..., C].
    train=False: the running `mean` / `var` leaves (inference, torch's eval mode).
    train=True: mean and biased variance of x over every axis but the last, counting only the
    positions where `valid` (bool, broadcastable to x.shape[:-1]; None: all) is True; when the
    "norm_statistics" collection is mutable, the new running `mean` and `var` are written there
    under this module's path (torch's update, unbiased variance). With no valid position the
    output is finite and the running statistics stay as they were.
    """

    eps: float = 1e-5
    momentum: float = 0.1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False, valid: jax.Array | None = None) -> jax.Array:
        channels = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (channels,))
        bias = self.param("bias", nn.initializers.zeros, (channels,))
        running_mean = jax.lax.stop_gradient(self.param("mean", nn.initializers.zeros, (channels,)))
        running_var = jax.lax.stop_gradient(self.param("var", nn.initializers.ones, (channels,)))
        values = x.astype(jnp.float32)
        if not train:
            mean, var = running_mean, running_var
        else:
            weights = jnp.ones(x.shape[:-1], jnp.float32)
            if valid is not None:
                weights = jnp.broadcast_to(valid, x.shape[:-1]).astype(jnp.float32)
            weights = weights[..., None]
            axes = tuple(range(x.ndim - 1))
            count = jnp.sum(weights)
            mean = jnp.sum(values * weights, axes) / jnp.maximum(count, 1.0)
            var = jnp.sum(jnp.square(values - mean) * weights, axes) / jnp.maximum(count, 1.0)
            if self.is_mutable_collection(NORM_STATISTICS):
                unbiased_var = var * count / jnp.maximum(count - 1.0, 1.0)
                seen = count > 0
                self.put_variable(NORM_STATISTICS, "mean", jnp.where(
                    seen, (1 - self.momentum) * running_mean + self.momentum * mean, running_mean))
                self.put_variable(NORM_STATISTICS, "var", jnp.where(
                    seen, (1 - self.momentum) * running_var + self.momentum * unbiased_var, running_var))
        normalized = (values - mean) * jax.lax.rsqrt(var + self.eps)
        return (normalized * scale + bias).astype(x.dtype)
