"""Instance masks for one image: pasting predicted masks into the image, cropping GT mask targets.

Shape legend: D detections, M GT instances, S mask size, H W image, P = S + 2 * padding.
"""

import jax
import jax.numpy as jnp

from maskrcnn_jax.ops.roi_align import roi_align


def _expand_boxes(boxes, scale):
    """torchvision expand_boxes: scale boxes [D, 4] about their centres (same float order)."""
    half_width = (boxes[:, 2] - boxes[:, 0]) * 0.5 * scale
    half_height = (boxes[:, 3] - boxes[:, 1]) * 0.5 * scale
    centre_x = (boxes[:, 2] + boxes[:, 0]) * 0.5
    centre_y = (boxes[:, 3] + boxes[:, 1]) * 0.5
    return jnp.stack(
        [centre_x - half_width, centre_y - half_height, centre_x + half_width, centre_y + half_height], axis=-1
    )


def _paste_weights(box_start, box_end, image_extent, mask_extent):
    """Per-box bilinear weights from one image axis onto one mask axis: [D] ints -> [D, image_extent, mask_extent].

    The box covers pixels box_start..box_end inclusive; the mask is resized to that many pixels
    with F.interpolate(mode='bilinear', align_corners=False) and copied in, and pixels outside
    the box or the image get weight 0.
    """
    resized_extent = jnp.maximum(box_end - box_start + 1, 1)
    pixel = jnp.arange(image_extent)[None, :]
    local = (pixel - box_start[:, None]).astype(jnp.float32)
    ratio = mask_extent / resized_extent.astype(jnp.float32)
    source = jnp.maximum(ratio[:, None] * (local + 0.5) - 0.5, 0.0)
    low = jnp.minimum(jnp.floor(source).astype(jnp.int32), mask_extent - 1)
    high = jnp.where(low < mask_extent - 1, low + 1, low)
    high_weight = jnp.clip(source - low, 0.0, 1.0)
    first = jnp.maximum(box_start, 0)[:, None]
    stop = jnp.minimum(box_end + 1, image_extent)[:, None]
    inside = (pixel >= first) & (pixel < stop)
    weights = jax.nn.one_hot(low, mask_extent) * (1.0 - high_weight)[..., None]
    weights = weights + jax.nn.one_hot(high, mask_extent) * high_weight[..., None]
    return weights * inside[..., None]


def paste_masks_in_image(masks, boxes, height, width, padding=1):
    """torchvision roi_heads.paste_masks_in_image for one image: masks [D, S, S], boxes [D, 4] -> float32 [D, height, width].

    As torchvision: each mask is padded by `padding` zeros, its box is scaled by (S + 2p) / S and
    truncated to ints, the padded mask is resized bilinearly (align_corners=False) to the box's
    (int) size and written into a zero image, clipped to the image. height and width are static.
    A box wholly outside the image pastes nothing (torchvision's slicing raises there).
    Written separably: pasted = row_weights [H, P] @ mask [P, P] @ col_weights [P, W]^T, so the
    only large array is the [D, H, W] output itself.
    """
    mask_size = masks.shape[-1]
    padded = jnp.pad(masks.astype(jnp.float32), ((0, 0), (padding, padding), (padding, padding)))
    padded_size = mask_size + 2 * padding
    pixel_boxes = _expand_boxes(boxes, padded_size / mask_size).astype(jnp.int32)  # truncates like int64()
    row_weights = _paste_weights(pixel_boxes[:, 1], pixel_boxes[:, 3], height, padded_size)
    col_weights = _paste_weights(pixel_boxes[:, 0], pixel_boxes[:, 2], width, padded_size)
    rows_pasted = jnp.einsum("dyi,dij->dyj", row_weights, padded)
    return jnp.einsum("dyj,dxj->dyx", rows_pasted, col_weights)


def crop_and_resize_masks(masks, boxes, output_size, *, sampling_ratio=2):
    """Mask targets: full-image masks [M, H, W] (any dtype) cropped to boxes [M, 4] -> float32 [M, S, S].

    Equal to torchvision.ops.roi_align(masks[:, None], boxes, (S, S), 1.0, sampling_ratio,
    aligned=False)[:, 0]. torchvision's mask loss uses the adaptive sampling_ratio=-1, which needs
    data-dependent shapes; the static sampling_ratio here is the fixed-shape stand-in.
    """

    def crop_one(mask, box):
        pooled = roi_align(mask[:, :, None], box[None], output_size, 1.0, sampling_ratio, False, boxes_per_step=1)
        return pooled[0, :, :, 0]

    return jax.vmap(crop_one)(masks.astype(jnp.float32), boxes)
