"""An exported artifact loaded and run on photos: the host side of serving (resize, pad, call).

No model code runs here: the programs are `jax.export.deserialize`d, the weights read from the
artifact. Legend: B batch, H W a photo, h w resized, Hc Wc canvas, D detections, S mask side.
"""

import os

import jax
import numpy as np

from maskrcnn_jax.data.transforms import resize_image, resized_shape
from maskrcnn_jax.export.artifact import read_artifact


def resized_photo(image: np.ndarray, min_size: int, max_size: int, dtype: str = "uint8") -> np.ndarray:
    """The photo (uint8, or float in [0, 255], [H, W, 3]) resized as the description records:
    torch's bilinear resize in float32 -> float32 [h, w, 3], or for dtype "uint8" rounded half to
    even -> uint8 [h, w, 3]."""
    height, width = resized_shape(image.shape[0], image.shape[1], min_size, max_size)
    resized = resize_image(image, height, width)
    return np.clip(np.round(resized), 0, 255).astype(np.uint8) if dtype == "uint8" else resized


class ExportedModel:
    """An artifact's programs (one per canvas) and weights (on the default device, put there once)."""

    def __init__(self, description: dict, programs: dict[tuple[int, int], bytes], weights: list[np.ndarray]):
        """description, programs, weights: as `read_artifact` returns them."""
        self.description = description
        self.class_names = tuple(description["class_names"])
        resize = description["preprocessing"]["resize"]
        self.min_size, self.max_size = resize["min_size"], resize["max_size"]
        self.input_dtype = {entry["name"]: entry for entry in description["inputs"]}["image"]["dtype"]
        # Smallest first, so that `canvas_for` picks the least padding.
        self.canvases = sorted(programs, key=lambda canvas: (canvas[0] * canvas[1], canvas))
        self.exported = {canvas: jax.export.deserialize(bytearray(programs[canvas])) for canvas in self.canvases}
        # jit caches one compiled program per canvas and batch size (the batch is symbolic in the artifact).
        self._calls = {canvas: jax.jit(exported.call) for canvas, exported in self.exported.items()}
        self.weights = [jax.device_put(weight) for weight in weights]

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ExportedModel":
        return cls(*read_artifact(path))

    def canvas_for(self, resized_sizes: list[tuple[int, int]]) -> tuple[int, int]:
        """The smallest canvas that holds every resized (h, w); ValueError when none does."""
        for canvas in self.canvases:
            if all(height <= canvas[0] and width <= canvas[1] for height, width in resized_sizes):
                return canvas
        raise ValueError(f"resized sizes {resized_sizes} fit none of the artifact's canvases {self.canvases}")

    def inputs(self, images: list[np.ndarray]) -> dict[str, np.ndarray]:
        """The program's inputs for B photos (uint8, or float in [0, 255], [H, W, 3]), on the smallest
        canvas that holds them all: {"image": the artifact's input dtype (uint8 or float32) [B, Hc, Wc, 3],
        "image_size": int32 [B, 2], "original_size": int32 [B, 2]}."""
        resized = [resized_photo(image, self.min_size, self.max_size, self.input_dtype) for image in images]
        sizes = [photo.shape[:2] for photo in resized]
        height, width = self.canvas_for(sizes)
        canvas = np.zeros((len(images), height, width, 3), self.input_dtype)
        for slot, photo in zip(canvas, resized):
            slot[:photo.shape[0], :photo.shape[1]] = photo
        return {"image": canvas, "image_size": np.asarray(sizes, np.int32),
                "original_size": np.asarray([image.shape[:2] for image in images], np.int32)}

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The program of inputs["image"]'s canvas on `inputs` -> host numpy {"boxes" [B, D, 4], "classes",
        "masks" [B, D, S, S], "scores", "valid"} (the description's outputs)."""
        call = self._calls[tuple(inputs["image"].shape[1:3])]
        return jax.device_get(call(self.weights, inputs["image"], inputs["image_size"], inputs["original_size"]))

    def predict(self, images: list[np.ndarray]) -> dict[str, np.ndarray]:
        """`run` on the `inputs` of B photos (one batch)."""
        return self.run(self.inputs(images))
