"""RPN targets on a padded canvas: anchors whose centre lies in the padding are never sampled, and
the samples equal what torchvision's Matcher and sampler counts give on the anchors of the photo
alone (torchvision pads a batch only to its largest image, so its anchors are the photo's)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
from torchvision.models.detection._utils import Matcher  # noqa: E402
from torchvision.ops import box_iou as torch_box_iou  # noqa: E402

from maskrcnn_jax.detector.spec import SamplerSpec  # noqa: E402
from maskrcnn_jax.detector.targets import rpn_targets  # noqa: E402
from maskrcnn_jax.ops.anchors import anchor_grid  # noqa: E402

CANVAS = (128, 128)
PHOTO = (128, 47)  # h, w: a portrait photo, the right 81 columns are padding
SAMPLER = SamplerSpec(foreground_iou=0.7, background_iou=0.3, allow_low_quality_matches=True,
                      batch_size_per_image=256, positive_fraction=0.5)
# GT 0 hugs the photo's right edge: its best anchors by IoU are centred in the padding.
GT_BOXES = np.array([[36.0, 10.0, 47.0, 42.0], [2.0, 70.0, 30.0, 120.0], [0.0, 0.0, 0.0, 0.0]], np.float32)
GT_VALID = np.array([True, True, False])


@pytest.fixture(scope="module")
def anchors():
    # Strides 16 and 32 on a 128x128 canvas: 8x8 and 4x4 positions, 3 sizes x 3 ratios each.
    return np.concatenate(anchor_grid(CANVAS, [(8, 8), (4, 4)], sizes=((32, 48, 64), (64, 96, 128))))


def sample(anchors, image_size, seed):
    targets = jax.jit(rpn_targets, static_argnames=("sampler", "box_weights"))(
        jnp.asarray(anchors), jnp.asarray(GT_BOXES), jnp.asarray(GT_VALID), jnp.asarray(image_size, jnp.int32),
        jax.random.key(seed), sampler=SAMPLER, box_weights=(1.0, 1.0, 1.0, 1.0))
    return {name: np.asarray(value) for name, value in targets.items()}


def torchvision_labels_on_the_photo(anchors):
    """torchvision's RPN matcher labels of the anchors centred on the photo (-1 elsewhere): [A]."""
    centers = (anchors[:, :2] + anchors[:, 2:]) / 2
    inside = (centers[:, 0] < PHOTO[1]) & (centers[:, 1] < PHOTO[0]) & (centers >= 0).all(axis=1)
    matcher = Matcher(SAMPLER.foreground_iou, SAMPLER.background_iou, SAMPLER.allow_low_quality_matches)
    iou = torch_box_iou(torch.as_tensor(GT_BOXES[GT_VALID]), torch.as_tensor(anchors[inside]))
    matched = matcher(iou).numpy()
    labels = np.full(len(anchors), -1)
    labels[inside] = np.where(matched >= 0, 1, np.where(matched == Matcher.BELOW_LOW_THRESHOLD, 0, -1))
    return labels, inside


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_samples_come_from_the_photo_and_count_as_torchvision_on_it(anchors, seed):
    labels, inside = torchvision_labels_on_the_photo(anchors)
    assert (~inside).sum() > 100 and (labels == 0).sum() < SAMPLER.batch_size_per_image  # negatives bind
    targets = sample(anchors, PHOTO, seed)
    index, positive, valid = targets["index"], targets["positive"], targets["valid"]
    expected_positives = min(int(SAMPLER.batch_size_per_image * SAMPLER.positive_fraction), (labels == 1).sum())
    expected_negatives = min(SAMPLER.batch_size_per_image - expected_positives, (labels == 0).sum())
    assert (positive & valid).sum() == expected_positives
    assert (~positive & valid).sum() == expected_negatives
    assert inside[index[valid]].all()
    np.testing.assert_array_equal(labels[index[valid & positive]], 1)
    np.testing.assert_array_equal(labels[index[valid & ~positive]], 0)


def test_a_photo_filling_the_canvas_samples_every_anchor(anchors):
    """Without padding nothing is excluded: the negatives outnumber the sampler's budget again."""
    targets = sample(anchors, CANVAS, 0)
    assert targets["valid"].sum() == SAMPLER.batch_size_per_image
    centers = (anchors[targets["index"]][:, :2] + anchors[targets["index"]][:, 2:]) / 2
    assert (centers[:, 0] >= PHOTO[1]).any()
