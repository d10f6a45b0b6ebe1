"""The training loss on a tiny model: one compile per shape, finite without ground truth, padding
examples inert, and the elementwise losses equal torch's functional ones."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from maskrcnn_jax.data.transforms import normalize_image
from maskrcnn_jax.detector import DetectorSpec, ProposalSpec, SamplerSpec
from maskrcnn_jax.detector.inputs import model_images
from maskrcnn_jax.detector.losses import (
    LOSS_NAMES,
    binary_cross_entropy_with_logits,
    detector_losses,
    make_loss_fn,
    smooth_l1,
)
from maskrcnn_jax.models import MaskRCNN, init_params

CANVAS = 96
MAX_INSTANCES = 4
SPEC = DetectorSpec(
    num_classes=4,
    anchor_sizes=(8, 16, 32, 64, 128),
    train_proposals=ProposalSpec(200, 100),
    rpn_sampler=SamplerSpec(0.7, 0.3, True, 64, 0.5),
    roi_sampler=SamplerSpec(0.5, 0.5, False, 32, 0.25),
    mask_rois_per_image=8,
)
MODEL = MaskRCNN(num_classes=4, stage_sizes=(1, 1, 1, 1), stem_width=8, fpn_channels=16,
                 representation_size=32, mask_head_channels=16)
# One jitted forward for the tests below that share a batch shape (one compile).
losses_and_samples = jax.jit(lambda p, b, k: detector_losses(MODEL, SPEC, p, b, k))


@pytest.fixture(scope="module")
def params():
    return init_params(MODEL, jax.random.key(0))


def make_batch(seed: int, boxes_per_image: list[list[list[float]]], valid=None) -> dict:
    """A batch of random images with the given GT boxes (classes 1, 2, ...) and box-filling masks."""
    rng = np.random.default_rng(seed)
    batch_size = len(boxes_per_image)
    gt_boxes = np.zeros((batch_size, MAX_INSTANCES, 4), np.float32)
    gt_valid = np.zeros((batch_size, MAX_INSTANCES), bool)
    gt_classes = np.zeros((batch_size, MAX_INSTANCES), np.int32)
    for b, boxes in enumerate(boxes_per_image):
        gt_boxes[b, : len(boxes)] = np.asarray(boxes, np.float32).reshape(-1, 4)
        gt_valid[b, : len(boxes)] = True
        gt_classes[b, : len(boxes)] = np.arange(1, len(boxes) + 1)
    masks = np.zeros((batch_size, MAX_INSTANCES, 112, 112), np.uint8)
    masks[:, :, 20:90, 10:100] = 1
    return {
        "image": jnp.asarray(rng.normal(size=(batch_size, CANVAS, CANVAS, 3)).astype(np.float32)),
        "image_size": jnp.full((batch_size, 2), CANVAS, jnp.int32),
        "gt_boxes": jnp.asarray(gt_boxes),
        "gt_classes": jnp.asarray(gt_classes),
        "gt_masks": jnp.asarray(masks),
        "gt_valid": jnp.asarray(gt_valid),
        "valid": jnp.asarray(np.ones(batch_size, bool) if valid is None else valid),
    }


def test_loss_compiles_once_per_shape_and_gradients_are_finite(params):
    loss_fn = make_loss_fn(MODEL, SPEC)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def value_and_grad(p, batch, key):
        return jax.value_and_grad(loss_fn, has_aux=True)(p, batch, key)

    first = make_batch(0, [[[10, 10, 50, 60], [40, 30, 90, 80]], []])
    second = make_batch(1, [[[5, 5, 30, 30]], [[20, 20, 70, 90], [0, 0, 40, 40], [50, 50, 95, 95]]])
    for batch, seed in ((first, 0), (second, 1)):
        (loss, metrics), grads = value_and_grad(params, batch, jax.random.key(seed))
        assert np.isfinite(float(loss))
        np.testing.assert_allclose(float(loss), sum(float(metrics[name]) for name in LOSS_NAMES), rtol=1e-6)
        assert all(bool(jnp.isfinite(leaf).all()) for leaf in jax.tree_util.tree_leaves(grads))
    assert float(metrics["sampled_anchors"]) == 64 and float(metrics["sampled_rois"]) == 32
    assert 0 < float(metrics["positive_rois"]) <= 8 and float(metrics["positive_roi_iou"]) >= 0.5


def test_loss_without_ground_truth_is_finite_and_all_background(params):
    batch = make_batch(2, [[], []])
    losses, aux = losses_and_samples(params, batch, jax.random.key(3))
    assert all(np.isfinite(float(losses[name])) for name in LOSS_NAMES)
    assert float(losses["loss_objectness"]) > 0 and float(losses["loss_classifier"]) > 0
    for name in ("loss_rpn_box_reg", "loss_box_reg", "loss_mask"):
        assert float(losses[name]) == 0.0
    assert not np.asarray(aux["rpn"]["positive"]).any() and not np.asarray(aux["rois"]["positive"]).any()
    assert np.asarray(aux["rpn"]["valid"]).sum() == 2 * 64
    assert (np.asarray(aux["rois"]["classes"]) == 0).all()


def test_loss_ignores_padding_examples(params):
    """An example with valid False contributes nothing, whatever its image and GT hold."""
    boxes = [[10, 10, 50, 60], [40, 30, 90, 80]]
    one = make_batch(4, [boxes, [[0, 0, 60, 60]]], valid=[True, False])
    other = make_batch(4, [boxes, [[30, 30, 90, 70], [5, 5, 20, 20]]], valid=[True, False])
    other["image"] = other["image"].at[1].set(7.0)
    first = losses_and_samples(params, one, jax.random.key(5))[0]
    second = losses_and_samples(params, other, jax.random.key(5))[0]
    for name in LOSS_NAMES:
        assert float(first[name]) == pytest.approx(float(second[name]), rel=1e-6), name


def test_uint8_images_give_the_losses_of_host_normalised_float_images(params):
    """The pipeline's uint8 photos, normalised on the device, give the losses of the float path (the
    same photos normalised on the host with numpy, zero outside each image)."""
    batch = make_batch(6, [[[10, 10, 50, 60]], [[20, 20, 70, 80], [5, 5, 30, 30]]])
    sizes = np.array([[80, 90], [96, 70]], np.int32)
    inside = ((np.arange(CANVAS)[None, :, None] < sizes[:, 0, None, None])
              & (np.arange(CANVAS)[None, None, :] < sizes[:, 1, None, None]))[..., None]
    pixels = np.random.default_rng(6).integers(0, 256, (2, CANVAS, CANVAS, 3), dtype=np.uint8) * inside
    floats = np.stack([normalize_image(image) for image in pixels]) * inside
    uint8_batch = {**batch, "image": jnp.asarray(pixels, jnp.uint8), "image_size": jnp.asarray(sizes)}
    float_batch = {**batch, "image": jnp.asarray(floats, jnp.float32), "image_size": jnp.asarray(sizes)}
    np.testing.assert_allclose(np.asarray(model_images(uint8_batch)), floats, rtol=1e-6, atol=1e-6)
    from_uint8 = losses_and_samples(params, uint8_batch, jax.random.key(7))[0]
    from_float = losses_and_samples(params, float_batch, jax.random.key(7))[0]
    for name in LOSS_NAMES:
        np.testing.assert_allclose(float(from_uint8[name]), float(from_float[name]), rtol=1e-6, atol=1e-6,
                                   err_msg=name)


def test_loss_elementwise_terms_equal_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = rng.normal(scale=0.3, size=1000).astype(np.float32)
    targets = rng.uniform(size=1000).astype(np.float32)
    expected_l1 = torch.nn.functional.smooth_l1_loss(torch.from_numpy(x), torch.zeros(1000), beta=1 / 9, reduction="none")
    np.testing.assert_allclose(np.asarray(smooth_l1(jnp.asarray(x))), expected_l1.numpy(), rtol=1e-6, atol=1e-7)
    logits = 20 * x
    expected_bce = torch.nn.functional.binary_cross_entropy_with_logits(
        torch.from_numpy(logits), torch.from_numpy(targets), reduction="none")
    np.testing.assert_allclose(np.asarray(binary_cross_entropy_with_logits(jnp.asarray(logits), jnp.asarray(targets))),
                               expected_bce.numpy(), rtol=1e-5, atol=1e-6)
