"""Pictures, host side: instances (detections or ground truth) drawn over an image with Pillow, in the
spirit of matterport's display_instances; and a training run's pictures: its losses and held-out AP
over steps (from WORKDIR/metrics.jsonl) and grids of same-sized panels (e.g. drawn detections).

Curves use matplotlib's object API (`Figure`) only: no pyplot, so no display backend is chosen or
needed; matplotlib is imported when a curve is plotted (drawing instances needs Pillow alone).

Legend: H W image, D instances, h w a mask's window.
"""

import colorsys
import os
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from maskrcnn_jax.inference.mask_windows import MaskWindow

MASK_ALPHA = 0.5
# metrics.jsonl names: the training records' losses and the evaluations' AP curves.
EVAL_PREFIX = "eval/"
LOSS_PREFIX = "loss"
AP_CURVES = ("bbox_AP", "segm_AP", "bbox_AP50", "segm_AP50")


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


def training_curves(records: Sequence[dict]) -> dict[str, dict[str, tuple[list[int], list[float]]]]:
    """The series to plot from metrics.jsonl records: {"losses": {name: (steps, values)}, "ap": {name:
    (steps, values)}}. Losses are the training records' "loss*" scalars (the total "loss" first; a
    skipped log window's null is left out); AP the evaluation records' AP_CURVES, without "eval/"."""
    losses, ap = {}, {}
    for record in records:
        for name, value in record.items():
            if value is None:
                continue
            if name.startswith(LOSS_PREFIX):
                target = losses
            elif name.startswith(EVAL_PREFIX) and name[len(EVAL_PREFIX):] in AP_CURVES:
                target, name = ap, name[len(EVAL_PREFIX):]
            else:
                continue
            steps, values = target.setdefault(name, ([], []))
            steps.append(int(record["step"]))
            values.append(float(value))
    ordered_losses = {name: losses[name] for name in sorted(losses, key=lambda name: (name != "loss", name))}
    ordered_ap = {name: ap[name] for name in AP_CURVES if name in ap}
    return {"losses": ordered_losses, "ap": ordered_ap}


def plot_training_curves(records: Sequence[dict], path: str | os.PathLike) -> None:
    """Writes a PNG at `path`: the training losses (log scale) and the evaluations' AP over steps."""
    from matplotlib.figure import Figure  # a third of a second to import: only here

    curves = training_curves(records)
    figure = Figure(figsize=(11, 4.2), dpi=100, layout="constrained")
    loss_axes, ap_axes = figure.subplots(1, 2)
    for name, (steps, values) in curves["losses"].items():
        loss_axes.plot(steps, values, label=name, linewidth=2.2 if name == "loss" else 1.2)
    loss_axes.set(title="training losses (mean per log window)", xlabel="step", yscale="log")
    for name, (steps, values) in curves["ap"].items():
        ap_axes.plot(steps, values, marker="o", label=name, linestyle="-" if name.endswith("_AP") else "--")
    ap_axes.set(title="held-out COCO AP (segm = mask)", xlabel="step", ylim=(0, 1))
    for axes in (loss_axes, ap_axes):
        axes.grid(alpha=0.3)
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize=8)
    figure.savefig(path)


def image_grid(panels: Sequence[Image.Image], columns: int, gap: int = 4,
               background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """The panels row by row, `columns` per row, each in a cell of the largest panel's size (top-left
    aligned), cells `gap` pixels apart on a `background` canvas."""
    if not panels:
        raise ValueError("no panels to arrange")
    cell_width = max(panel.width for panel in panels)
    cell_height = max(panel.height for panel in panels)
    columns = min(columns, len(panels))
    rows = -(-len(panels) // columns)
    grid = Image.new("RGB", (columns * cell_width + (columns + 1) * gap, rows * cell_height + (rows + 1) * gap),
                     background)
    for index, panel in enumerate(panels):
        row, column = divmod(index, columns)
        grid.paste(panel.convert("RGB"), (gap + column * (cell_width + gap), gap + row * (cell_height + gap)))
    return grid


def upscale(array: np.ndarray, factor: int, axes: tuple[int, int] = (0, 1)) -> np.ndarray:
    """`array` with its two `axes` (default an image's H and W) `factor` times longer, by pixel
    repetition: masks stay exact and pixel-edge coordinates simply scale by `factor`."""
    return np.repeat(np.repeat(array, factor, axis=axes[0]), factor, axis=axes[1])
