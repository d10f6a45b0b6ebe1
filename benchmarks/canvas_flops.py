"""GFLOP per image of a config's programs on each canvas, and their mean over a dataset's image sizes:
what a canvas per orientation saves against one square canvas (docs/benchmarks.md, issue 21).

An image costs the FLOP of the canvas it is padded to (the padding is computed like the photo), so
over a dataset the mean is the sum over canvases of (share of the images on it) x (GFLOP per image
there); each image goes to its canvas as the training pipeline sends it (`data.grouping`). FLOP are
XLA's cost analysis of the programs compiled for this process's first device at batch 1: the
trainer's step (`training.setup.training_program`) and predict. RoIAlign gathers every box at once
here: XLA counts a loop's body once, and the CPU default loops over pairs of boxes.
"""

from typing import Sequence

import jax
import ml_collections
import numpy as np

from maskrcnn_jax.data.grouping import canvas_index
from maskrcnn_jax.detector import make_predict_fn, spec_from_config
from maskrcnn_jax.models import build_model
from maskrcnn_jax.training import mesh as mesh_lib
from maskrcnn_jax.training.loss import loss_fn_from_config
from maskrcnn_jax.training.setup import abstract_training_batch, training_program

PROGRAMS = ("train", "predict")
ALL_BOXES_AT_ONCE = 1 << 20


def program_gflop(config: ml_collections.ConfigDict, canvases: Sequence[tuple[int, int]]) -> dict:
    """{canvas (Hc, Wc): {"train": GFLOP of one image's training step, "predict": of predict}}."""
    config = config.copy_and_resolve_references()
    config.model.roi_boxes_per_step = ALL_BOXES_AT_ONCE
    config.train.global_batch_size = 1
    mesh = mesh_lib.make_mesh(jax.devices()[:1])
    program = training_program(config, mesh, loss_fn_from_config)
    predict = make_predict_fn(build_model(config), spec_from_config(config))
    params = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype), program.abstract_state.params)
    flops = {}
    for canvas in canvases:
        batch = abstract_training_batch(config, mesh, 1, canvas)
        train = program.train_step.lower(program.abstract_state, batch).compile()
        inputs = {key: jax.ShapeDtypeStruct(batch[key].shape, batch[key].dtype)
                  for key in ("image", "image_size", "original_size")}
        inference = predict.lower(params, inputs).compile()
        flops[tuple(canvas)] = {name: float(compiled.cost_analysis()["flops"]) / 1e9
                                for name, compiled in (("train", train), ("predict", inference))}
    return flops


def dataset_gflop_per_image(image_sizes: Sequence[tuple[int, int]], canvases: Sequence[tuple[int, int]],
                            gflop: dict) -> dict:
    """Mean GFLOP per image of images of (H, W) image_sizes, each on its canvas among `canvases`
    (`program_gflop`'s gflop holds them all): {"images": count per canvas, "train": mean, "predict": mean}."""
    canvases = [tuple(canvas) for canvas in canvases]
    counts = np.bincount([canvas_index(height, width, canvases) for height, width in image_sizes],
                         minlength=len(canvases))
    shares = counts / counts.sum()
    return {"images": counts.tolist(),
            **{name: float(sum(share * gflop[canvas][name] for share, canvas in zip(shares, canvases)))
               for name in PROGRAMS}}
