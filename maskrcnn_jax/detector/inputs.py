"""The model's input images from a batch: the one place where pixels are normalised on the device.

The data pipeline sends the resized photos as uint8 (a quarter of float32's bytes from the host to
the device and between grain's worker processes); the loss and predict normalise them here.
Float images are taken as already normalised (`maskrcnn_jax.inference.preprocess`, the torchvision-parity
path, normalises on the host before resizing, as torchvision does).

Legend: B batch, Hc Wc canvas.
"""

import jax
import jax.numpy as jnp

from maskrcnn_jax.data.transforms import IMAGENET_MEAN, IMAGENET_STD


def normalize_on_device(image: jax.Array, image_size: jax.Array) -> jax.Array:
    """uint8 (or float32 in [0, 255]) [B, Hc, Wc, 3] RGB -> float32 (x / 255 - mean) / std, zero outside each image's
    (h, w) = image_size int32 [B, 2]: torchvision pads after normalising, so the padding is 0 there,
    not the normalised black that zero bytes would give. Same float32 operations, in the same order,
    as the host's `maskrcnn_jax.data.transforms.normalize_image`."""
    normalized = image.astype(jnp.float32) / jnp.float32(255.0)
    normalized = (normalized - jnp.asarray(IMAGENET_MEAN, jnp.float32)) / jnp.asarray(IMAGENET_STD, jnp.float32)
    rows = jnp.arange(image.shape[1])[None, :, None] < image_size[:, 0, None, None]
    columns = jnp.arange(image.shape[2])[None, None, :] < image_size[:, 1, None, None]
    return jnp.where((rows & columns)[..., None], normalized, 0.0)


def model_images(batch: dict) -> jax.Array:
    """batch["image"] as the backbone takes it: uint8 [B, Hc, Wc, 3] is normalised (`normalize_on_device`
    with batch["image_size"]); a float image is returned as it is (normalised on the host)."""
    image = batch["image"]
    if image.dtype == jnp.uint8:
        return normalize_on_device(image, batch["image_size"])
    return image
