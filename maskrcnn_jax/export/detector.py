"""`Detector.from_exported(path)`: `Detector`'s `detect`, `detect_with_mask_windows` and `draw`, with
the model's outputs computed by an exported artifact instead of the model code.

Legend: D detections, S mask side.
"""

import os

import numpy as np

from maskrcnn_jax.export.exported_model import ExportedModel
from maskrcnn_jax.inference.detector import Detector, as_rgb_image
from maskrcnn_jax.inference.predictor import check_range


class ExportedDetector(Detector):
    """A `Detector` whose model is an artifact written by scripts/export.py.

    It has no config, parameter tree or Flax model (the artifact holds a compiled-to-StableHLO program
    per canvas and the weights), so it does not run `Detector.__init__`; what the inherited methods
    read is set here: class_names, score_threshold and `_outputs_of_one`.

    Its detections are those of the checkpoint's `Detector` on the photo as the artifact sees it:
    resized, then rounded to uint8 (the checkpoint's keeps the resized photo in float) and padded to
    the artifact's canvas (the checkpoint's pads to the next multiple of 32), see the README.
    """

    def __init__(self, path: str | os.PathLike, score_threshold: float):
        check_range("score_threshold", score_threshold, 0.0, 1.0)
        self.exported = ExportedModel.load(path)
        self.class_names = self.exported.class_names
        self.score_threshold = score_threshold

    def preprocess(self, image) -> dict[str, np.ndarray]:
        """The artifact's inputs for one image (any form `detect` accepts), a batch of one:
        {"image" uint8 [1, Hc, Wc, 3], "image_size", "original_size"}."""
        return self.exported.inputs([as_rgb_image(image)])

    def _outputs_of_one(self, rgb: np.ndarray) -> dict[str, np.ndarray]:
        return {key: value[0] for key, value in self.exported.predict([rgb]).items()}
