"""The exported artifact's file format and its JSON description.

An artifact (`model.jaxexport`) is an uncompressed zip file that a loader reads with the standard
library, numpy and jax alone:

    description.json        what `describe` returns: inputs, outputs, canvases, preprocessing, classes
    weights.npz             the parameters, `w0000`, `w0001`, ...: the program's first argument, in order
    program_<H>x<W>.bin     one serialized `jax.export.Exported` per canvas (`jax.export.deserialize`)

The same description is written beside the artifact (model.jaxexport -> model.json) for people to read.
"""

import io
import json
import os
import pathlib
import zipfile
from typing import Sequence

import jax
import numpy as np

FORMAT = "maskrcnn_jax.export"
FORMAT_VERSION = 1
DESCRIPTION_ENTRY = "description.json"
WEIGHTS_ENTRY = "weights.npz"


def program_entry(canvas: tuple[int, int]) -> str:
    return f"program_{canvas[0]}x{canvas[1]}.bin"


def weight_name(index: int) -> str:
    return f"w{index:04d}"


def description_path(artifact: str | os.PathLike) -> pathlib.Path:
    """The JSON written beside an artifact: model.jaxexport -> model.json."""
    return pathlib.Path(artifact).with_suffix(".json")


def describe(*, class_names: Sequence[str], canvases: list[tuple[int, int]], platforms: list[str], num_weights: int,
             input_dtype: str,
             min_size: int, max_size: int, mean: Sequence[float], std: Sequence[float], detections_per_image: int,
             mask_size: int, model_score_threshold: float, mask_threshold: float) -> dict:
    """The artifact's description: everything a loader needs besides the programs and the weights."""
    detections = detections_per_image
    rounding = ", then rounded half to even to uint8" if input_dtype == "uint8" else " (float32 values in [0, 255])"
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "jax_version": jax.__version__,
        "requires": (f"jax >= {jax.__version__} with flatbuffers, on one of the platforms; a newer jax loads the "
                     "programs within jax.export's backward compatibility window (about 6 months), an older one "
                     "is not guaranteed to"),
        "platforms": platforms,
        "class_names": list(class_names),
        "canvases": [{"canvas": [height, width], "program": program_entry((height, width))}
                     for height, width in canvases],
        "inputs": [
            {"name": "weights", "shape": f"list of {num_weights} arrays", "dtype": "float32",
             "meaning": f"the parameters: {WEIGHTS_ENTRY}'s {weight_name(0)}..{weight_name(num_weights - 1)}, "
                        "in order"},
            {"name": "image", "shape": ["b", "Hc", "Wc", 3], "dtype": input_dtype,
             "meaning": "RGB photos resized and zero-padded bottom/right to the canvas (preprocessing)"},
            {"name": "image_size", "shape": ["b", 2], "dtype": "int32", "meaning": "each resized photo's (h, w)"},
            {"name": "original_size", "shape": ["b", 2], "dtype": "int32",
             "meaning": "each photo's (H, W) before resizing"},
        ],
        "outputs": [
            {"name": "boxes", "shape": ["b", detections, 4], "dtype": "float32",
             "meaning": "x1, y1, x2, y2 in the original photo's pixels"},
            {"name": "classes", "shape": ["b", detections], "dtype": "int32", "meaning": "index into class_names"},
            {"name": "masks", "shape": ["b", detections, mask_size, mask_size], "dtype": "float32",
             "meaning": "mask probabilities within each box (postprocessing.mask_paste)"},
            {"name": "scores", "shape": ["b", detections], "dtype": "float32", "meaning": "best first"},
            {"name": "valid", "shape": ["b", detections], "dtype": "bool",
             "meaning": "which slots hold a detection (the rest are zero padding)"},
        ],
        "preprocessing": {
            "channels": "RGB, EXIF orientation applied, alpha dropped",
            "resize": {
                "min_size": min_size,
                "max_size": max_size,
                "rule": "scale = min(min_size / min(H, W), max_size / max(H, W)); h, w = floor(H * scale), "
                        "floor(W * scale), each at least 1 (torchvision's GeneralizedRCNNTransform)",
                "interpolation": "bilinear, align_corners=False (torch F.interpolate), on the uint8 photo in float32"
                                 + rounding,
            },
            "canvas": "the smallest canvas (by area) that holds (h, w); the photo at the top-left, zeros elsewhere",
            "normalization": {"mean": list(mean), "std": list(std),
                              "where": "inside the program: (image / 255 - mean) / std, and 0 outside (h, w)"},
        },
        "postprocessing": {
            "model_score_threshold": model_score_threshold,
            "mask_paste": "torchvision's paste_masks_in_image: each mask padded by one zero, its box scaled by "
                          "(S + 2) / S, resized bilinearly (align_corners=False) to the box, thresholded at "
                          f"{mask_threshold}",
            "mask_threshold": mask_threshold,
        },
    }


def write_artifact(path: str | os.PathLike, description: dict, programs: dict[tuple[int, int], bytes],
                   weights: list[np.ndarray]) -> pathlib.Path:
    """Writes the artifact at `path` and its description beside it; returns the description's path."""
    path = pathlib.Path(path)
    weights_file = io.BytesIO()
    np.savez(weights_file, **{weight_name(index): weight for index, weight in enumerate(weights)})
    # Stored, not deflated: float weights and flatbuffers barely compress, and a loader reads them faster.
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(DESCRIPTION_ENTRY, json.dumps(description, indent=1))
        archive.writestr(WEIGHTS_ENTRY, weights_file.getvalue())
        for canvas, program in programs.items():
            archive.writestr(program_entry(canvas), program)
    beside = description_path(path)
    beside.write_text(json.dumps(description, indent=1) + "\n")
    return beside


def read_artifact(path: str | os.PathLike) -> tuple[dict, dict[tuple[int, int], bytes], list[np.ndarray]]:
    """(description, {canvas (Hc, Wc): serialized program}, weights) of an artifact; ValueError for a
    file that is not one (naming what is wrong)."""
    try:
        with zipfile.ZipFile(path) as archive:
            description = json.loads(archive.read(DESCRIPTION_ENTRY))
            if description.get("format") != FORMAT or description.get("format_version") != FORMAT_VERSION:
                raise ValueError(f"format {description.get('format')!r} version {description.get('format_version')!r}, "
                                 f"expected {FORMAT!r} version {FORMAT_VERSION}")
            with np.load(io.BytesIO(archive.read(WEIGHTS_ENTRY))) as stored:
                weights = [stored[weight_name(index)] for index in range(len(stored.files))]
            programs = {tuple(entry["canvas"]): archive.read(entry["program"]) for entry in description["canvases"]}
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, ValueError) as error:
        raise ValueError(f"{path} is not an artifact written by scripts/export.py: {error}") from None
    return description, programs, weights
