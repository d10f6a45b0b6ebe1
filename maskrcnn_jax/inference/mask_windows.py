"""Detection masks pasted on the host, each within its own box window: torchvision's
paste_masks_in_image and the 0.5 threshold computed only inside each kept box (bounded memory on
large photos). What the evaluation encodes as RLE, `Detector` returns and the drawings tint.

Shapes: D detections, S mask head output size (28), H W the image, h w one detection's window.
"""

import dataclasses

import numpy as np

from maskrcnn_jax.detector.paste import MASK_THRESHOLD

PADDING = 1  # torchvision pads each 28x28 mask by one zero before pasting


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


def _expanded_boxes(boxes_xyxy: np.ndarray, mask_size: int) -> np.ndarray:
    """torchvision's expand_boxes by (S + 2) / S (the same float32 operations in the same order),
    truncated to ints as its .to(torch.int64): [D, 4] -> int64 [D, 4] (x0, y0, x1, y1), both ends inclusive."""
    boxes = np.asarray(boxes_xyxy, np.float32).reshape(-1, 4)
    scale = np.float32((mask_size + 2 * PADDING) / mask_size)
    half_width = (boxes[:, 2] - boxes[:, 0]) * np.float32(0.5) * scale
    half_height = (boxes[:, 3] - boxes[:, 1]) * np.float32(0.5) * scale
    centre_x, centre_y = (boxes[:, 2] + boxes[:, 0]) * np.float32(0.5), (boxes[:, 3] + boxes[:, 1]) * np.float32(0.5)
    return np.stack([centre_x - half_width, centre_y - half_height, centre_x + half_width, centre_y + half_height],
                    axis=1).astype(np.int64)


def _bilinear_taps(box_starts: np.ndarray, box_ends: np.ndarray, firsts: np.ndarray, lengths: np.ndarray,
                   extent: int) -> tuple:
    """Bilinear taps along one axis for pixels firsts[d] .. firsts[d] + lengths[d] - 1 of each detection d
    whose box covers pixels box_starts[d]..box_ends[d] (inclusive), concatenated over the detections:
    (low, high: int64 [N] source indices into the padded mask of `extent`; low_weight, high_weight:
    float32 [N]), N = lengths.sum(). torchvision's F.interpolate(mode='bilinear', align_corners=False)
    to the box's size: the same float32 operations, so the same values."""
    owner = np.repeat(np.arange(len(lengths)), lengths)
    position = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    local = (position + (firsts - box_starts)[owner]).astype(np.float32)
    ratio = (np.float32(extent) / np.maximum(box_ends - box_starts + 1, 1).astype(np.float32))[owner]
    source = np.maximum(ratio * (local + np.float32(0.5)) - np.float32(0.5), np.float32(0.0))
    low = np.minimum(source.astype(np.int64), extent - 1)
    high = np.where(low < extent - 1, low + 1, low)
    high_weight = np.clip(source - low, 0.0, 1.0).astype(np.float32)  # exact: source's fraction
    return low, high, np.float32(1.0) - high_weight, high_weight


def paste_mask_windows(mask_probs: np.ndarray, boxes_xyxy: np.ndarray, height: int, width: int) -> list[MaskWindow]:
    """Each detection's mask pasted as torchvision's paste_masks_in_image and thresholded at 0.5,
    computed only inside its (expanded, integer) box clipped to the image: mask_probs float [D, S, S],
    boxes_xyxy [D, 4] original-image pixels -> D windows.

    Pass only the detections to keep: the cost is each kept box's area, not D x H x W. The
    per-detection arithmetic (expanded boxes, interpolation weights, the interpolation along x) is
    done for all detections at once; per detection one [w, h] interpolation along y remains, in
    torchvision's order (x first, then y: the same float32 values, measured equal).
    """
    mask_probs = np.asarray(mask_probs, np.float32)
    count, mask_size = len(mask_probs), mask_probs.shape[-1]
    extent = mask_size + 2 * PADDING
    x0, y0, x1, y1 = _expanded_boxes(boxes_xyxy, mask_size).T
    top, bottom = np.clip(y0, 0, height), np.clip(y1 + 1, 0, height)
    left, right = np.clip(x0, 0, width), np.clip(x1 + 1, 0, width)
    inside = (bottom > top) & (right > left)  # boxes wholly outside the image paste nothing
    heights, widths = np.where(inside, bottom - top, 0), np.where(inside, right - left, 0)
    row_low, row_high, row_low_weight, row_high_weight = _bilinear_taps(y0, y1, top, heights, extent)
    column_low, column_high, column_low_weight, column_high_weight = _bilinear_taps(x0, x1, left, widths, extent)
    padded = np.pad(mask_probs, ((0, 0), (PADDING, PADDING), (PADDING, PADDING)))
    column_owner = np.repeat(np.arange(count), widths)
    # [sum of widths, extent]: each window column interpolated along x, for every row of its padded mask.
    along_x = (padded[column_owner, :, column_low] * column_low_weight[:, None]
               + padded[column_owner, :, column_high] * column_high_weight[:, None])
    row_ends, column_ends = np.cumsum(heights), np.cumsum(widths)
    windows = []
    for d in range(count):
        rows = slice(row_ends[d] - heights[d], row_ends[d])
        columns = along_x[column_ends[d] - widths[d]:column_ends[d]]
        values = columns[:, row_low[rows]] * row_low_weight[rows] + columns[:, row_high[rows]] * row_high_weight[rows]
        windows.append(MaskWindow(int(top[d]), int(left[d]), (values > MASK_THRESHOLD).T))  # [w, h] -> [h, w]
    return windows


def paste_mask_window(mask_probs: np.ndarray, box_xyxy: np.ndarray, height: int, width: int) -> MaskWindow:
    """`paste_mask_windows` of one detection: mask_probs float [S, S], box_xyxy [4] original-image pixels.
    Memory: an h x w float32 array and its mask."""
    return paste_mask_windows(np.asarray(mask_probs)[None], np.asarray(box_xyxy)[None], height, width)[0]


def masks_from_windows(windows: list[MaskWindow], height: int, width: int) -> np.ndarray:
    """bool [D, H, W] full-image masks of D windows."""
    masks = np.zeros((len(windows), height, width), bool)
    for mask, window in zip(masks, windows):
        mask[window.slices] = window.pixels
    return masks
