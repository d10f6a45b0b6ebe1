"""Detection masks pasted into the image and thresholded on the device, for a fixed canvas. (On the
host, each detection within its own box window: `maskrcnn_jax.inference.mask_windows`.)

Shapes: B batch, D detections, S mask head output size (28), Hc Wc the paste canvas.
"""

import functools

import jax

from maskrcnn_jax.ops.masks import paste_masks_in_image

MASK_THRESHOLD = 0.5  # torchvision's and detectron2's threshold on pasted probabilities


@functools.lru_cache(maxsize=16)
def make_binary_mask_paster(canvas_height: int, canvas_width: int):
    """Jitted (mask_probs [B, D, S, S] float, boxes_xyxy [B, D, 4] original-image pixels) -> bool [B, D, Hc, Wc].

    Cached per canvas (and jit caches per B, D). Memory is B x D x Hc x Wc: for large photos or
    many detections use `maskrcnn_jax.inference.mask_windows.paste_mask_windows`.

    Pasting onto a canvas larger than an image leaves the pixels inside the image unchanged (the
    paste only clips boxes at the canvas edge), so with one canvas as large as the largest image,
    each image's masks are the top-left [:height, :width] of its canvas.
    """

    def paste_one_image(mask_probs, boxes_xyxy):
        return paste_masks_in_image(mask_probs, boxes_xyxy, canvas_height, canvas_width) > MASK_THRESHOLD

    return jax.jit(jax.vmap(paste_one_image))
