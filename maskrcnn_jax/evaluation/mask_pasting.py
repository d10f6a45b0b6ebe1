"""Detection masks pasted into the image on the device, thresholded there, for COCO evaluation.

Shapes: B batch, D detections, S mask head output size (28), Hc Wc the paste canvas (the largest
original image size of the dataset, so one compile serves every image).
"""

import functools

import jax

from maskrcnn_jax.ops.masks import paste_masks_in_image

MASK_THRESHOLD = 0.5  # torchvision's and detectron2's evaluation threshold on pasted probabilities


@functools.lru_cache(maxsize=8)
def make_binary_mask_paster(canvas_height: int, canvas_width: int):
    """Jitted (mask_probs [B,D,S,S] float, boxes_xyxy [B,D,4] original-image pixels) -> bool [B,D,Hc,Wc].

    Cached per canvas: evaluating every N training steps, or warming up before timing, reuses one compile.

    Pasting onto a canvas larger than an image leaves the pixels inside the image unchanged (the
    paste only clips boxes at the canvas edge), so each image's masks are the top-left
    [:height, :width] of its canvas, sliced on the host.
    """

    def paste_one_image(mask_probs, boxes_xyxy):
        pasted = paste_masks_in_image(mask_probs, boxes_xyxy, canvas_height, canvas_width)
        return pasted > MASK_THRESHOLD

    return jax.jit(jax.vmap(paste_one_image))


def pasted_canvas_size(coco_gt) -> tuple:
    """(Hc, Wc): the largest height and the largest width among the images of a COCO index."""
    images = coco_gt.dataset["images"]
    return max(image["height"] for image in images), max(image["width"] for image in images)

