"""The exported program: the whole predict path from resized photos on a canvas (uint8, or float32
for bit-faithful input), exported with a symbolic batch.

    serve(weights, image, image_size, original_size) -> {"boxes", "classes", "masks", "scores", "valid"}

Parameters are an argument (`weights`: the parameter tree's leaves, in `jax.tree.leaves` order), not
constants baked into the program: an artifact holds them once for all its canvases, a server puts
them on the device once, and XLA compiles a program without 170 MB of constants to fold (for R50).

Legend: b batch (symbolic: one artifact serves any batch size), Hc Wc canvas, D detections, S mask
head output side (2 x the mask RoI size).
"""

import math
from typing import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from maskrcnn_jax.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from maskrcnn_jax.detector import predict, spec_from_config
from maskrcnn_jax.detector.inputs import normalize_on_device
from maskrcnn_jax.detector.paste import MASK_THRESHOLD
from maskrcnn_jax.export.artifact import describe
from maskrcnn_jax.checkpoint import check_params_fit
from maskrcnn_jax.models import build_model, init_params, platform_config

DEFAULT_PLATFORMS = ("cpu", "cuda")
# "uint8": the resized photo rounded to bytes, a quarter of float32's transfer (what a server wants);
# "float32": the resized photo unrounded, so the program sees exactly what the checkpoint's Detector sees.
INPUT_DTYPES = ("uint8", "float32")


def serving_function(model, spec, params_treedef):
    """serve(weights: list of the parameter leaves, image uint8 or float32 [b, Hc, Wc, 3] resized and zero-padded,
    image_size int32 [b, 2] resized (h, w), original_size int32 [b, 2] (H, W)) -> `predict`'s outputs:
    {"boxes" float32 [b, D, 4] xyxy original pixels, "classes" int32 [b, D], "masks" float32
    [b, D, S, S] probabilities, "scores" float32 [b, D], "valid" bool [b, D]}."""

    def serve(weights, image, image_size, original_size):
        params = jax.tree.unflatten(params_treedef, weights)
        batch = {"image": normalize_on_device(image, image_size), "image_size": image_size,
                 "original_size": original_size}
        return predict(model, spec, params, batch)

    return serve


def default_canvases(config: ml_collections.ConfigDict) -> list[tuple[int, int]]:
    """One canvas per orientation that holds every resized image: (min_size, max_size) rounded up to
    config.input.size_divisible, landscape then portrait (800x1344 and 1344x800 for the COCO recipe)."""
    divisible = config.input.size_divisible
    sides = (config.input.min_size, config.input.max_size)
    short, long = (int(math.ceil(side / divisible) * divisible) for side in sides)
    return [(short, long)] if short == long else [(short, long), (long, short)]


def export_detector(
    config: ml_collections.ConfigDict,
    params: dict,
    class_names: Sequence[str],
    canvases: Sequence[tuple[int, int]],
    platforms: Sequence[str] = DEFAULT_PLATFORMS,
    input_dtype: str = "uint8",
) -> tuple[dict, dict[tuple[int, int], bytes], list[np.ndarray]]:
    """The predict path of config's model with `params`, exported once per canvas (Hc, Wc) for
    `platforms` ("cpu", "cuda", "rocm", "tpu"), with a symbolic batch, taking images of `input_dtype`
    (INPUT_DTYPES). One program serves every platform, so the platform-dependent choices of the
    config ("auto" dtype, RoIAlign's boxes per step: `models.platform_config`) are made for the
    first of `platforms`.

    Returns (the artifact's description, `artifact.describe`; {canvas: serialized jax.export.Exported};
    the parameter leaves float32 numpy, the program's first argument) for `write_artifact`.
    Raises CheckpointError for parameters that do not fit config's model.
    """
    if input_dtype not in INPUT_DTYPES:
        raise ValueError(f"input_dtype {input_dtype!r}: choose from {INPUT_DTYPES}")
    config = platform_config(config, "gpu" if platforms[0] in ("cuda", "rocm") else platforms[0])
    model = build_model(config)
    spec = spec_from_config(config, class_names)  # as the checkpoint Detector: unnamed slots never detected
    check_params_fit(params, jax.eval_shape(lambda: init_params(model, jax.random.key(0))))
    weights, treedef = jax.tree.flatten(params)
    weights = [np.asarray(leaf) for leaf in weights]
    serve = jax.jit(serving_function(model, spec, treedef))
    (batch,) = jax.export.symbolic_shape("b")
    weight_shapes = [jax.ShapeDtypeStruct(leaf.shape, leaf.dtype) for leaf in weights]
    programs = {}
    for height, width in canvases:
        exported = jax.export.export(serve, platforms=tuple(platforms))(
            weight_shapes,
            jax.ShapeDtypeStruct((batch, height, width, 3), input_dtype),
            jax.ShapeDtypeStruct((batch, 2), jnp.int32),
            jax.ShapeDtypeStruct((batch, 2), jnp.int32),
        )
        programs[(height, width)] = exported.serialize()
    description = describe(
        class_names=class_names,
        canvases=list(programs),
        platforms=list(platforms),
        num_weights=len(weights),
        input_dtype=input_dtype,
        min_size=config.input.min_size,
        max_size=config.input.max_size,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        detections_per_image=spec.detections_per_image,
        mask_size=int(jax.tree.unflatten(exported.out_tree, exported.out_avals)["masks"].shape[-1]),
        model_score_threshold=config.test.score_threshold,
        mask_threshold=MASK_THRESHOLD,
    )
    return description, programs, weights
