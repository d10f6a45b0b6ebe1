"""Instance masks for one image: pasting predicted masks into the image, GT mask targets for RoIs.

Shape legend: D detections, M GT instances, R RoIs, S mask size, Sm GT crop size, H W image,
P = S + 2 * padding.
"""

import jax
import jax.numpy as jnp


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


def _integrated_tent(offset):
    """Integral of the bilinear hat max(0, 1 - |t|) from -inf to `offset` (elementwise)."""
    t = jnp.clip(offset, -1.0, 1.0)
    return jnp.where(t < 0.0, 0.5 * (t + 1.0) ** 2, 1.0 - 0.5 * (1.0 - t) ** 2)


def _crop_resample_weights(roi_start, roi_end, box_start, box_end, crop_size, output_size, aligned):
    """Weights [R, S, Sm] taking one axis of each GT crop onto the RoI's S bins along that axis.

    Coordinates: pixel i covers [i, i + 1). Crop sample j lies at
    box_start + (j + 0.5) * (box_end - box_start) / Sm (data.transforms.crop_masks_to_boxes).
    The RoI spans [roi_start, roi_start + max(roi_end - roi_start, 1)]; aligned=False moves it by
    +0.5 pixel, as roi_align(aligned=False) samples pixel centres at integer coordinates. Each bin
    gets the mean over its extent of the crop's bilinear interpolant, zero beyond the crop's edge
    samples: the limit of roi_align's adaptive sampling grid, in closed form with the integrated hat.
    """
    roi_length = jnp.maximum(roi_end - roi_start, 1.0)
    box_length = box_end - box_start
    crop_per_pixel = crop_size / jnp.where(box_length > 0, box_length, 1.0)
    bin_edges = jnp.arange(output_size + 1, dtype=jnp.float32) / output_size
    shift = 0.0 if aligned else 0.5
    pixel_edges = roi_start[:, None] + shift + bin_edges[None, :] * roi_length[:, None]
    crop_edges = (pixel_edges - box_start[:, None]) * crop_per_pixel[:, None] - 0.5  # [R, S + 1]
    sample = jnp.arange(crop_size, dtype=jnp.float32)
    cumulative = _integrated_tent(crop_edges[:, :, None] - sample[None, None, :])  # [R, S + 1, Sm]
    bin_width = (crop_edges[:, 1:] - crop_edges[:, :-1])[:, :, None]
    weights = (cumulative[:, 1:] - cumulative[:, :-1]) / bin_width
    return jnp.where((box_length > 0)[:, None, None], weights, 0.0)


def mask_targets_from_crops(gt_crops, gt_boxes, rois, output_size, *, aligned=True):
    """Mask targets for RoIs from their GT's box-cropped masks (F-VLM's crop-in-target-box idea).

    Args: gt_crops [R, Sm, Sm] (uint8 or float), for each RoI its matched GT's mask cropped to
      gt_boxes [R, 4] (xyxy canvas pixels) as data.transforms.crop_masks_to_boxes makes them;
      rois [R, 4] xyxy canvas pixels; output_size S and aligned (static).
    Returns: float32 [R, S, S] in [0, 1], zero where the RoI lies beyond its GT box: the mean of
      the crop's bilinear interpolant over each RoI bin, i.e. roi_align(mask, roi, (S, S), 1.0,
      sampling_ratio -> infinity, aligned) of a mask whose pixels the crop holds. RoIs narrower than
      a pixel are widened to 1 pixel, as aligned=False does.
    aligned=True (default) is closest to torchvision's training targets, roi_align(resized_mask,
    roi, 28, 1.0, -1, aligned=False): torchvision resizes GT masks with legacy 'nearest' (output
    pixel i reads input floor(i * in / out)), which moves them by about +0.5 pixel at non-integer
    scales and cancels aligned=False's half-pixel shift; aligned=True is also the target that lines
    up with the resized image. docs/training_targets.md measures both.
    Written separably, rows [R, S, Sm] @ crop @ columns^T: no full-image mask is ever built.
    """
    crop_size = gt_crops.shape[-1]
    row_weights = _crop_resample_weights(
        rois[:, 1], rois[:, 3], gt_boxes[:, 1], gt_boxes[:, 3], crop_size, output_size, aligned)
    col_weights = _crop_resample_weights(
        rois[:, 0], rois[:, 2], gt_boxes[:, 0], gt_boxes[:, 2], crop_size, output_size, aligned)
    rows_resampled = jnp.einsum("rpi,rij->rpj", row_weights, gt_crops.astype(jnp.float32))
    return jnp.einsum("rpj,rqj->rpq", rows_resampled, col_weights)
