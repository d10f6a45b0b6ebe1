"""Drawing instances (detections or ground truth) over an image, host side with Pillow, in the spirit
of matterport's display_instances.

Legend: H W image, D instances, h w a mask's window.
"""

import colorsys
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from maskrcnn_jax.inference.mask_windows import MaskWindow

MASK_ALPHA = 0.5


def distinct_colors(count: int) -> list[tuple[int, int, int]]:
    """`count` bright RGB colours evenly spread in hue (deterministic, so reruns draw the same picture)."""
    return [tuple(int(255 * c) for c in colorsys.hsv_to_rgb(i / max(count, 1), 1.0, 1.0)) for i in range(count)]


def draw_instances(
    image: np.ndarray,
    boxes: np.ndarray,
    classes: np.ndarray,
    masks,
    class_names: Sequence[str],
    scores: np.ndarray | None = None,
) -> Image.Image:
    """Image with each instance's mask tinted, its box outlined and "name [score]" written above it.

    image uint8 [H, W, 3]; boxes [D, 4] xyxy pixels; classes int [D]; masks bool [D, H, W] or D
    `MaskWindow`s (each tinted within its window: memory stays about one image however many masks);
    scores [D] or None (ground truth).
    """
    colors = distinct_colors(len(boxes))
    picture = np.array(image, np.uint8)
    for mask, color in zip(masks, colors):
        window = mask if isinstance(mask, MaskWindow) else MaskWindow(0, 0, np.asarray(mask, bool))
        region = picture[window.slices]
        tinted = (1 - MASK_ALPHA) * region[window.pixels] + MASK_ALPHA * np.asarray(color, np.float32)
        region[window.pixels] = tinted.round().clip(0, 255).astype(np.uint8)
    picture = Image.fromarray(picture)
    draw = ImageDraw.Draw(picture)
    # Lines and text grow with the image so that they stay readable on 2000-pixel photos.
    long_side = max(picture.size)
    line_width = max(2, long_side // 400)
    font = ImageFont.load_default(size=max(11, long_side // 60))
    captions = [class_names[int(label)] for label in classes]
    if scores is not None:
        captions = [f"{caption} {float(score):.2f}" for caption, score in zip(captions, scores)]
    for box, caption, color in zip(boxes, captions, colors):
        x1, y1, x2, y2 = (float(v) for v in box)
        draw.rectangle((x1, y1, x2, y2), outline=color, width=line_width)
        text_box = draw.textbbox((x1, y1), caption, font=font)
        text_height = text_box[3] - text_box[1]
        top = y1 - text_height - 2 if y1 - text_height - 2 >= 0 else y1
        draw.rectangle((x1, top, x1 + text_box[2] - text_box[0] + 4, top + text_height + 2), fill=color)
        draw.text((x1 + 2, top), caption, fill=(0, 0, 0), font=font)
    return picture
