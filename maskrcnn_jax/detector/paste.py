"""Detection masks pasted into the image and thresholded: on the device for a fixed canvas, or on
the host one detection at a time within its own box window (bounded memory on large photos).

Shapes: B batch, D detections, S mask head output size (28), Hc Wc the paste canvas, H W the image,
h w one detection's window.
"""

import dataclasses
import functools

import jax
import numpy as np

from maskrcnn_jax.ops.masks import paste_masks_in_image

MASK_THRESHOLD = 0.5  # torchvision's and detectron2's threshold on pasted probabilities
PADDING = 1  # torchvision pads each 28x28 mask by one zero before pasting


@functools.lru_cache(maxsize=16)
def make_binary_mask_paster(canvas_height: int, canvas_width: int):
    """Jitted (mask_probs [B, D, S, S] float, boxes_xyxy [B, D, 4] original-image pixels) -> bool [B, D, Hc, Wc].

    Cached per canvas (and jit caches per B, D). Memory is B x D x Hc x Wc: for large photos or
    many detections use `paste_mask_windows`.

    Pasting onto a canvas larger than an image leaves the pixels inside the image unchanged (the
    paste only clips boxes at the canvas edge), so with one canvas as large as the largest image,
    each image's masks are the top-left [:height, :width] of its canvas.
    """

    def paste_one_image(mask_probs, boxes_xyxy):
        return paste_masks_in_image(mask_probs, boxes_xyxy, canvas_height, canvas_width) > MASK_THRESHOLD

    return jax.jit(jax.vmap(paste_one_image))


@dataclasses.dataclass(frozen=True)
class MaskWindow:
    """A binary mask of an image that is False outside rows top..top+h and columns left..left+w.

    pixels: bool [h, w] (h or w is 0 for a box wholly outside the image).
    """

    top: int
    left: int
    pixels: np.ndarray

    @property
    def area(self) -> int:
        return int(self.pixels.sum())

    @property
    def slices(self) -> tuple[slice, slice]:
        """Where the window lies in the image: mask[window.slices] = window.pixels."""
        height, width = self.pixels.shape
        return slice(self.top, self.top + height), slice(self.left, self.left + width)

    def full(self, height: int, width: int) -> np.ndarray:
        """The mask as bool [H, W]."""
        mask = np.zeros((height, width), bool)
        mask[self.slices] = self.pixels
        return mask


def _window_weights(box_start: int, box_end: int, first: int, stop: int, mask_extent: int) -> np.ndarray:
    """Bilinear weights float32 [stop - first, mask_extent] from image pixels first..stop-1 of one
    axis onto the padded mask, for a box covering pixels box_start..box_end inclusive: the mask
    resized with F.interpolate(mode='bilinear', align_corners=False) to the box's size, as torchvision."""
    resized_extent = max(box_end - box_start + 1, 1)
    local = (np.arange(first, stop) - box_start).astype(np.float32)
    ratio = np.float32(mask_extent) / np.float32(resized_extent)
    source = np.maximum(ratio * (local + np.float32(0.5)) - np.float32(0.5), np.float32(0.0))
    low = np.minimum(np.floor(source).astype(np.int64), mask_extent - 1)
    high = np.where(low < mask_extent - 1, low + 1, low)
    high_weight = np.clip(source - low, 0.0, 1.0).astype(np.float32)
    weights = np.zeros((len(local), mask_extent), np.float32)
    rows = np.arange(len(local))
    weights[rows, low] += 1.0 - high_weight
    weights[rows, high] += high_weight
    return weights


def paste_mask_window(mask_probs: np.ndarray, box_xyxy: np.ndarray, height: int, width: int) -> MaskWindow:
    """One detection's mask pasted as torchvision's paste_masks_in_image and thresholded at 0.5,
    computed only inside its (expanded, integer) box clipped to the image.

    mask_probs float [S, S]; box_xyxy [4] original-image pixels. The window is
    rows [h, P] @ padded mask [P, P] @ columns [P, w]: memory is an h x w float32 array and its mask.
    """
    mask_size = mask_probs.shape[-1]
    padded_size = mask_size + 2 * PADDING
    padded = np.pad(np.asarray(mask_probs, np.float32), PADDING)
    # torchvision's expand_boxes (same float order), truncated to ints as its .to(torch.int64).
    box = np.asarray(box_xyxy, np.float32)
    scale = np.float32(padded_size / mask_size)
    half_width, half_height = (box[2] - box[0]) * np.float32(0.5) * scale, (box[3] - box[1]) * np.float32(0.5) * scale
    centre_x, centre_y = (box[2] + box[0]) * np.float32(0.5), (box[3] + box[1]) * np.float32(0.5)
    x0, y0, x1, y1 = (int(v) for v in (centre_x - half_width, centre_y - half_height,
                                       centre_x + half_width, centre_y + half_height))
    top, bottom = min(max(y0, 0), height), max(min(y1 + 1, height), 0)
    left, right = min(max(x0, 0), width), max(min(x1 + 1, width), 0)
    if bottom <= top or right <= left:
        return MaskWindow(top, left, np.zeros((0, 0), bool))
    rows = _window_weights(y0, y1, top, bottom, padded_size)
    columns = _window_weights(x0, x1, left, right, padded_size)
    # einsum, not BLAS: a [h, P] x [P, w] product with P = 30 gains nothing from BLAS threads, and on
    # busy cores their start-up made it 30x slower (measured).
    return MaskWindow(top, left, np.einsum("yj,xj->yx", rows @ padded, columns) > MASK_THRESHOLD)


def paste_mask_windows(mask_probs: np.ndarray, boxes_xyxy: np.ndarray, height: int, width: int) -> list[MaskWindow]:
    """`paste_mask_window` of each detection: mask_probs [D, S, S], boxes_xyxy [D, 4] -> D windows.

    Pass only the detections to keep: the cost is each kept box's area, not D x H x W.
    """
    return [paste_mask_window(masks, box, height, width) for masks, box in zip(mask_probs, boxes_xyxy)]


def masks_from_windows(windows: list[MaskWindow], height: int, width: int) -> np.ndarray:
    """bool [D, H, W] full-image masks of D windows."""
    masks = np.zeros((len(windows), height, width), bool)
    for mask, window in zip(masks, windows):
        mask[window.slices] = window.pixels
    return masks
