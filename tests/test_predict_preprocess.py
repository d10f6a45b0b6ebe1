"""Host preprocessing against torchvision's GeneralizedRCNNTransform (normalise, resize, pad)."""

import numpy as np
import pytest

from maskrcnn_jax.inference.preprocess import padded_canvas_size, preprocess_batch

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
from torchvision.models.detection.transform import GeneralizedRCNNTransform  # noqa: E402

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def torchvision_batch(images, min_size, max_size):
    transform = GeneralizedRCNNTransform(min_size, max_size, MEAN, STD).eval()
    with torch.no_grad():
        image_list, _ = transform([torch.from_numpy(image).permute(2, 0, 1).float() / 255 for image in images])
    return image_list.tensors.numpy().transpose(0, 2, 3, 1), np.asarray(image_list.image_sizes)


@pytest.mark.parametrize(
    "shapes,min_size,max_size",
    [
        ([(427, 640), (500, 375)], 800, 1333),  # landscape + portrait COCO sizes, upscaled
        ([(333, 517), (97, 1000)], 320, 512),  # odd sides, a long thin image limited by max_size
        ([(1024, 768)], 600, 1000),  # downscaled
    ],
)
def test_matches_generalized_rcnn_transform(shapes, min_size, max_size):
    rng = np.random.default_rng(sum(h * w for h, w in shapes))
    images = [rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8) for h, w in shapes]
    expected_images, expected_sizes = torchvision_batch(images, min_size, max_size)
    batch = preprocess_batch(images, min_size, max_size, canvas_size=None)
    np.testing.assert_array_equal(batch["image_size"], expected_sizes)
    np.testing.assert_array_equal(batch["original_size"], np.asarray(shapes))
    assert batch["image"].shape == expected_images.shape
    np.testing.assert_allclose(batch["image"], expected_images, atol=1e-5)


def test_fixed_canvas_pads_further_with_zeros_and_rejects_small_canvases():
    image = np.random.default_rng(0).integers(0, 256, size=(427, 640, 3), dtype=np.uint8)
    expected, _ = torchvision_batch([image], 320, 512)
    batch = preprocess_batch([image], 320, 512, canvas_size=(512, 512))
    height, width = expected.shape[1:3]
    assert batch["image"].shape == (1, 512, 512, 3)
    np.testing.assert_allclose(batch["image"][:, :height, :width], expected, atol=1e-5)
    assert not batch["image"][:, height:].any() and not batch["image"][:, :, width:].any()
    assert padded_canvas_size(341, 512) == (352, 512)
    with pytest.raises(ValueError, match="does not fit the canvas"):
        preprocess_batch([image], 320, 512, canvas_size=(256, 512))
