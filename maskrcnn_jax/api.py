"""`Detector`: detect objects in photos in a few lines, from a checkpoint directory.

    from maskrcnn_jax import Detector

    detector = Detector.from_checkpoint("/tmp/ckpt")          # config and class names come with it
    detections = detector.detect([image])                     # uint8 RGB [H, W, 3], any sizes
    detector.draw(image, detections[0]).save("image.png")

Each image is preprocessed as torchvision does (resize to min/max size, pad to a multiple of
`config.input.size_divisible`), so the model compiles once per padded size and reuses it.

Legend: H W original image, N detections kept.
"""

import math
from typing import Sequence

import jax
import ml_collections
import numpy as np
from PIL import Image

from maskrcnn_jax.checkpoint import load_checkpoint
from maskrcnn_jax.detector import make_binary_mask_paster, make_predict_fn, spec_from_config
from maskrcnn_jax.models import build_model
from maskrcnn_jax.preprocess import preprocess_batch
from maskrcnn_jax.visualize import draw_instances

DEFAULT_SCORE_THRESHOLD = 0.5  # as matterport's DETECTION_MIN_CONFIDENCE; evaluation keeps config.test's 0.05


class Detector:
    """A model, its parameters (on the device, put there once) and its class names, ready to detect."""

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        params: dict,
        class_names: Sequence[str],
        score_threshold: float = DEFAULT_SCORE_THRESHOLD,
    ):
        """config: the model config (config.model, config.input, config.test); params: its parameter
        tree; class_names: [K] names, index = label, index 0 the background. Detections scoring below
        score_threshold are dropped (the model itself keeps those above config.test.score_threshold)."""
        if len(class_names) != config.model.num_classes:
            raise ValueError(f"{len(class_names)} class names for a model with {config.model.num_classes} class slots")
        self.config = config
        self.class_names = tuple(class_names)
        self.score_threshold = score_threshold
        self.spec = spec_from_config(config)
        self.model = build_model(config)
        self.params = jax.device_put(params)
        self._predict = make_predict_fn(self.model, self.spec)

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
        dotted name, e.g. `Detector.from_checkpoint(path, **{"input.min_size": 600})`."""
        params, stored_config, class_names = load_checkpoint(path)
        config = (config if config is not None else stored_config).copy_and_resolve_references()
        config.update_from_flattened_dict(overrides)
        return cls(config, params, class_names, score_threshold)

    def preprocess(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """One image as a batch of one on torchvision's padded canvas: {"image", "image_size", "original_size"}."""
        if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected a uint8 RGB image [H, W, 3], got {image.dtype} {image.shape}")
        inputs = self.config.input
        return preprocess_batch([image], inputs.min_size, inputs.max_size, None, inputs.size_divisible)

    def detect(self, images: Sequence[np.ndarray]) -> list[dict]:
        """Detections of each uint8 RGB image [H, W, 3], scoring at least `score_threshold`, best first:
        {"boxes": float32 [N, 4] xyxy original pixels, "scores": float32 [N], "classes": int32 [N] labels,
        "class_names": N names, "masks": bool [N, H, W]}."""
        return [self._detect_one(image) for image in images]

    def _detect_one(self, image: np.ndarray) -> dict:
        outputs = jax.device_get(self._predict(self.params, self.preprocess(image)))
        outputs = {key: value[0] for key, value in outputs.items()}
        keep = np.flatnonzero(outputs["valid"] & (outputs["scores"] >= self.score_threshold))
        return {
            "boxes": outputs["boxes"][keep],
            "scores": outputs["scores"][keep],
            "classes": outputs["classes"][keep],
            "class_names": [self.class_names[label] for label in outputs["classes"][keep]],
            "masks": self._paste(outputs["masks"], outputs["boxes"], keep, image.shape[:2]),
        }

    def _paste(self, masks: np.ndarray, boxes: np.ndarray, keep: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
        """Binary masks [N, H, W] of the kept detections, pasted on the device."""
        if len(keep) == 0:
            return np.zeros((0, *image_size), bool)
        # Paste a power-of-two number of slots (padded with a repeat of the first): a few compiles
        # per image size, and no memory spent on the detections that were dropped.
        slots = min(len(masks), 2 ** math.ceil(math.log2(len(keep))))
        chosen = np.concatenate([keep, np.full(slots - len(keep), keep[0])])
        paste = make_binary_mask_paster(*image_size)
        return np.asarray(paste(masks[chosen][None], boxes[chosen][None]))[0, : len(keep)]

    def draw(self, image: np.ndarray, detections: dict) -> Image.Image:
        """The image with each detection's mask tinted, box outlined and "class score" written."""
        return draw_instances(
            image, detections["boxes"], detections["classes"], detections["masks"], self.class_names, detections["scores"]
        )
