"""Pictures of a training run: its losses and held-out AP over steps (from WORKDIR/metrics.jsonl),
and a grid of same-sized panels (e.g. drawn detections).

matplotlib's object API (`Figure`) only: no pyplot, so no display backend is chosen or needed.
"""

import os
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

EVAL_PREFIX = "eval/"
LOSS_PREFIX = "loss"
AP_CURVES = ("bbox_AP", "segm_AP", "bbox_AP50", "segm_AP50")


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
