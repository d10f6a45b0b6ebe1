"""Mask R-CNN R50-FPN against torchvision on real photos: same weights (converted), same outputs.

torchvision's `maskrcnn_resnet50_fpn(weights=None)` gets seeded random weights that make confident
detections; both systems run on two COCO photos at min_size 320 / max_size 512 (small for CI).
Compared: the preprocessed batch, FPN features, RPN proposals, final boxes / classes / scores,
28x28 mask probabilities and masks pasted at the original image size.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import shared_data_path
from detection_matching import allowed_differences, matched_pairs, pasted_mask_overlap
from maskrcnn_jax.command_line import load_config_file
from maskrcnn_jax.convert.torchvision import convert_state_dict
from maskrcnn_jax.data.image_io import load_image
from maskrcnn_jax.detector import predict_with_intermediates, spec_from_config
from maskrcnn_jax.models import build_model
from maskrcnn_jax.inference.preprocess import preprocess_batch

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
from torchvision_reference import confident_random_torchvision_maskrcnn  # noqa: E402

MIN_SIZE, MAX_SIZE = 320, 512
# Two photos of different orientation (landscape 640x427, portrait 381x500), so the batch pads both ways.
PHOTOS = ("000000000042.jpg", "000000000073.jpg")
CONFIG = "configs/mask_rcnn_r50_fpn_coco.py"


@pytest.fixture(scope="module")
def outputs(request):
    root = request.config.rootpath
    images = [load_image(shared_data_path("coco_val2014_43", "images", name)) for name in PHOTOS]
    reference = confident_random_torchvision_maskrcnn(seed=0, min_size=MIN_SIZE, max_size=MAX_SIZE)
    with torch.no_grad():
        tensors = [torch.from_numpy(image.copy()).permute(2, 0, 1).float() / 255 for image in images]
        image_list, _ = reference.transform(tensors)
        features = reference.backbone(image_list.tensors)
        proposals, _ = reference.rpn(image_list, features)
        detections, _ = reference.roi_heads(features, proposals, image_list.image_sizes)
        masks_28 = [d["masks"][:, 0].numpy() for d in detections]
        detections = reference.transform.postprocess(detections, image_list.image_sizes, [i.shape[:2] for i in images])

    config = load_config_file(root / CONFIG)
    config.model.backbone.bn_eps = 1e-5  # torchvision's BatchNorm2d (a model built with weights=None)
    model, spec = build_model(config), spec_from_config(config)
    expected = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))["params"]
    params = convert_state_dict({k: v.numpy() for k, v in reference.state_dict().items()}, expected)
    batch = preprocess_batch(images, MIN_SIZE, MAX_SIZE, None)
    run = jax.jit(lambda p, b: predict_with_intermediates(model, spec, p, b))
    ours, intermediates = jax.device_get(run(params, batch))
    return {
        "torch": {
            "images": image_list.tensors.numpy().transpose(0, 2, 3, 1),
            "image_sizes": np.asarray(image_list.image_sizes),
            "features": [f.numpy().transpose(0, 2, 3, 1) for f in features.values()],
            "proposals": [p.numpy() for p in proposals],
            "detections": [{k: v.numpy() for k, v in d.items()} for d in detections],
            "masks_28": masks_28,
        },
        "batch": batch,
        "ours": ours,
        "intermediates": intermediates,
        "images": images,
    }


def test_preprocessing_matches_torchvision_transform(outputs):
    torch_side, batch = outputs["torch"], outputs["batch"]
    np.testing.assert_array_equal(batch["image_size"], torch_side["image_sizes"])
    assert batch["image"].shape == torch_side["images"].shape
    np.testing.assert_allclose(batch["image"], torch_side["images"], atol=1e-5)


def test_fpn_features_within_1e4_relative(outputs):
    ours = outputs["intermediates"]["features"]
    reference = outputs["torch"]["features"]
    assert len(ours) == len(reference) == 5
    for level, (mine, theirs) in enumerate(zip(ours, reference)):
        assert mine.shape == theirs.shape, level
        relative = np.abs(mine - theirs).max() / np.abs(theirs).max()
        assert relative < 1e-4, (level, relative)


# Proposals per image that may differ between the two implementations (as in
# test_loss_parity_torchvision): float32 rounding moves objectness scores by ~1e-6 relative, so a box
# tied within that at the per-level top-1000 cut, at NMS's IoU 0.7 or at the post-NMS top-1000 cut
# can go either way, and which way depends on the CPU kind (issue 26). A real bug moves far more: a
# wrong NMS threshold, top-n, clip or decode changes hundreds of boxes, or every box.
PROPOSAL_NEAR_TIES = 3


def test_rpn_proposals_are_the_same(outputs):
    intermediates = outputs["intermediates"]
    for b, theirs in enumerate(outputs["torch"]["proposals"]):
        mine = intermediates["proposals"][b][intermediates["proposal_valid"][b]]
        # close[i, j]: our proposal i is torchvision's j (up to float32 rounding of the box decode, ~1e-4).
        close = np.abs(mine[:, None, :] - theirs[None, :, :]).max(axis=-1) < 1e-2
        ours_unmatched, theirs_unmatched = int((~close.any(axis=1)).sum()), int((~close.any(axis=0)).sum())
        # Same (score) order: a matched box's rank moves only by the near-ties kept above it on one
        # side and not the other, plus one for two neighbours whose scores tie within float32
        # rounding and come out swapped. An unsorted or wrongly merged list moves boxes by hundreds.
        rank_moves = np.abs(np.arange(len(mine))[:, None] - np.arange(len(theirs))[None, :])
        displacement = np.where(close, rank_moves, len(mine) + len(theirs)).min(axis=1)[close.any(axis=1)]
        print(f"image {b}: {len(mine)} proposals vs torchvision's {len(theirs)}, unmatched {ours_unmatched} / "
              f"{theirs_unmatched}, largest rank move {displacement.max()}, same rank {np.mean(displacement == 0):.3f}")
        assert len(theirs) > 500 and abs(len(mine) - len(theirs)) <= PROPOSAL_NEAR_TIES
        assert ours_unmatched <= PROPOSAL_NEAR_TIES and theirs_unmatched <= PROPOSAL_NEAR_TIES
        assert displacement.max() <= PROPOSAL_NEAR_TIES + 1


def test_detections_match_boxes_classes_scores(outputs):
    for theirs, mine, found, match in matched_pairs(outputs["torch"]["detections"], outputs["ours"]):
        assert len(theirs["boxes"]) >= 20, "the reference must make detections for this test to mean anything"
        # All found, but for a few near-ties (detection_matching.NEAR_TIES: either may keep a box
        # that ties a threshold or a cut within float32 rounding).
        allowed = allowed_differences(len(theirs["boxes"]))
        print(f"{len(mine['boxes'])} detections vs torchvision's {len(theirs['boxes'])}, {(~found).sum()} of theirs "
              f"unmatched (allowed {allowed}), max score difference {np.abs(mine['scores'][match[found]] - theirs['scores'][found]).max():.1e}")
        assert abs(len(mine["boxes"]) - len(theirs["boxes"])) <= allowed
        assert (~found).sum() <= allowed
        np.testing.assert_allclose(mine["scores"][match[found]], theirs["scores"][found], atol=1e-3)


def test_mask_probabilities_and_pasted_masks_match(outputs):
    pairs = matched_pairs(outputs["torch"]["detections"], outputs["ours"])
    for b, (theirs, mine, found, match) in enumerate(pairs):
        np.testing.assert_allclose(mine["masks"][match[found]], outputs["torch"]["masks_28"][b][found], atol=1e-3)
        intersection, union = pasted_mask_overlap(mine, match[found], theirs["masks"][found, 0] > 0.5,
                                                  outputs["images"][b].shape)
        assert (intersection / np.maximum(union, 1) >= 0.98).all()
