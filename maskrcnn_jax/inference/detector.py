"""`Detector`: detect objects in photos in a few lines, from a checkpoint directory.

    from maskrcnn_jax import Detector

    detector = Detector.from_checkpoint("/tmp/ckpt")          # config and class names come with it
    detections = detector.detect(["photo.jpg"])               # paths or arrays, any sizes
    detector.draw("photo.jpg", detections[0]).save("photo.png")

Images: a file path, a PIL image, or an array: uint8 [0, 255] or float [0, 1]; [H, W] grey,
[H, W, 1], [H, W, 3] RGB or [H, W, 4] RGBA (alpha dropped). Anything else raises ValueError saying
what was expected. Each image is preprocessed as torchvision does (resize to min/max size, pad to a
multiple of `config.input.size_divisible`), so the model compiles once per padded size and reuses
it; masks are pasted on the host for the kept detections only, each within its box
(`detect_with_mask_windows` keeps them that way: memory bounded whatever the photo's size).

Legend: H W original image, N detections kept.
"""

import math
import os
from typing import Sequence

import jax
import ml_collections
import numpy as np
from PIL import Image

from maskrcnn_jax.data.image_io import load_image
from maskrcnn_jax.inference.mask_windows import masks_from_windows, paste_mask_windows
from maskrcnn_jax.inference.predictor import Predictor, check_range, load_predictor
from maskrcnn_jax.inference.preprocess import preprocess_batch
from maskrcnn_jax.drawing import draw_instances

DEFAULT_SCORE_THRESHOLD = 0.5  # as matterport's DETECTION_MIN_CONFIDENCE; evaluation keeps config.test's 0.05


def as_rgb_image(image) -> np.ndarray:
    """An image given as a path, PIL image or array (module docstring) -> uint8 [H, W, 3], or
    float32 [H, W, 3] in [0, 255] for a float image (kept exact for preprocessing)."""
    if isinstance(image, (str, os.PathLike)):
        return load_image(image)
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    shape = array.shape
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        hint = "; channels first? use image.transpose(1, 2, 0)" if array.ndim == 3 and shape[0] in (1, 3, 4) else ""
        raise ValueError(f"expected an image [H, W] (grey), [H, W, 3] (RGB) or [H, W, 4] (RGBA), got shape {shape}{hint}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"the image is empty (shape {shape})")
    if array.dtype == np.uint8:
        pass
    elif np.issubdtype(array.dtype, np.floating):
        low, high = float(np.min(array)), float(np.max(array))
        if not (math.isfinite(low) and math.isfinite(high) and 0.0 <= low and high <= 1.0):
            raise ValueError(
                f"a float image must hold values in [0, 1], found [{low}, {high}] (values 0-255: pass "
                "image.astype(np.uint8), or divide by 255)"
            )
        array = array.astype(np.float32) * np.float32(255.0)
    else:
        raise ValueError(f"expected a uint8 (0-255) or float (0-1) image, got {array.dtype} (values 0-255: "
                         "pass image.astype(np.uint8))")
    if array.shape[-1] == 4:
        array = array[:, :, :3]  # alpha dropped, as image_io does for RGBA files
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=2)
    return array


def _as_uint8(image: np.ndarray) -> np.ndarray:
    return image if image.dtype == np.uint8 else np.clip(np.round(image), 0, 255).astype(np.uint8)


class Detector:
    """A model, its parameters (on the device, put there once) and its class names, ready to detect."""

    def __init__(self, predictor: Predictor, score_threshold: float = DEFAULT_SCORE_THRESHOLD):
        """predictor: the model, its parameters and class names (`inference.predictor.make_predictor`
        or `load_predictor`). Detections scoring below score_threshold are dropped (the model itself
        keeps those above config.test.score_threshold). Raises ValueError for a threshold outside [0, 1]."""
        check_range("score_threshold", score_threshold, 0.0, 1.0)
        self.config = predictor.config
        self.class_names = predictor.class_names
        self.spec = predictor.spec
        self.params = predictor.params
        self._predict = predictor.predict
        self.score_threshold = score_threshold

    @classmethod
    def from_checkpoint(
        cls,
        path: str,
        *,
        config: ml_collections.ConfigDict | None = None,
        score_threshold: float = DEFAULT_SCORE_THRESHOLD,
        **overrides,
    ) -> "Detector":
        """The detector saved at `path` (a checkpoint directory or a training workdir, see
        `maskrcnn_jax.checkpoint`). config: replaces the stored config; overrides: config fields by
        dotted name, e.g. `Detector.from_checkpoint(path, **{"input.min_size": 600})`. Raises
        ValueError (CheckpointError for parameters that do not fit the config's model)."""
        return cls(load_predictor(path, config, overrides=overrides), score_threshold)

    @classmethod
    def from_exported(cls, path: str, *, score_threshold: float = DEFAULT_SCORE_THRESHOLD) -> "Detector":
        """The detector of an artifact written by scripts/export.py: the same `detect`, `draw`, class
        names and score threshold, run by the artifact's serialized programs and weights (no model
        code, no config: `maskrcnn_jax.export.detector.ExportedDetector`)."""
        from maskrcnn_jax.export.detector import ExportedDetector  # a subclass: imported here, not at the top

        return ExportedDetector(path, score_threshold)

    def preprocess(self, image) -> dict[str, np.ndarray]:
        """One image (any accepted form) as a batch of one on torchvision's padded canvas:
        {"image", "image_size", "original_size"}."""
        return self._batch_of_one(as_rgb_image(image))

    def _batch_of_one(self, rgb: np.ndarray) -> dict[str, np.ndarray]:
        inputs = self.config.input
        return preprocess_batch([rgb], inputs.min_size, inputs.max_size, None, inputs.size_divisible)

    def detect(self, images: Sequence) -> list[dict]:
        """Detections of each image (path, PIL image or array, see the module docstring), scoring at
        least `score_threshold`, best first: {"boxes": float32 [N, 4] xyxy original pixels, "scores":
        float32 [N], "classes": int32 [N] labels, "class_names": N names, "masks": bool [N, H, W]}."""
        detections = []
        for image in images:
            found = self.detect_with_mask_windows(image)
            height, width = found.pop("image_size")
            found["masks"] = masks_from_windows(found.pop("mask_windows"), height, width)
            detections.append(found)
        return detections

    def detect_with_mask_windows(self, image) -> dict:
        """`detect` of one image, with each mask kept within its box: {"boxes", "scores", "classes",
        "class_names", "mask_windows": N `MaskWindow`s, "image_size": (H, W)}. Memory beyond the
        model: the image, its preprocessed copy and the largest box's window, however large the photo."""
        image = as_rgb_image(image)
        height, width = image.shape[:2]
        outputs = self._outputs_of_one(image)
        keep = np.flatnonzero(outputs["valid"] & (outputs["scores"] >= self.score_threshold))
        return {
            "boxes": outputs["boxes"][keep],
            "scores": outputs["scores"][keep],
            "classes": outputs["classes"][keep],
            "class_names": [self.class_names[label] for label in outputs["classes"][keep]],
            "mask_windows": paste_mask_windows(outputs["masks"][keep], outputs["boxes"][keep], height, width),
            "image_size": (height, width),
        }

    def _outputs_of_one(self, rgb: np.ndarray) -> dict[str, np.ndarray]:
        """The model's fixed-size outputs for one `as_rgb_image` photo, on the host: {"boxes" [D, 4]
        original pixels, "scores" [D], "classes" [D], "masks" [D, S, S] probabilities, "valid" [D]}."""
        outputs = jax.device_get(self._predict(self.params, self._batch_of_one(rgb)))
        return {key: value[0] for key, value in outputs.items()}

    def draw(self, image, detections: dict) -> Image.Image:
        """The image with each detection's mask tinted, box outlined and "class score" written
        (detections from `detect` or `detect_with_mask_windows`)."""
        masks = detections["mask_windows"] if "mask_windows" in detections else detections["masks"]
        return draw_instances(
            _as_uint8(as_rgb_image(image)), detections["boxes"], detections["classes"], masks, self.class_names,
            detections["scores"],
        )
