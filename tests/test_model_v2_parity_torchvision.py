"""Mask R-CNN v2 against torchvision's `maskrcnn_resnet50_fpn_v2` on real photos: same weights, same outputs.

torchvision's v2 (BatchNorm in the backbone, FPN, box and mask heads; 2-conv RPN head; conv box
head) gets seeded random weights and random BatchNorm statistics of the size of its activations
(tests/torchvision_reference.py), converted by our converter, which must recognise it as v2. Both
run on two COCO photos at min_size 320 / max_size 512; our model compiles once.
Compared: FPN features, final boxes / classes / scores, 28x28 mask probabilities and masks pasted
at the original image size.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import shared_data_path
from detection_matching import allowed_differences, matched_pairs, pasted_mask_overlap
from maskrcnn_jax.command_line import load_config_file
from maskrcnn_jax.convert.torchvision import batchnorm_eps, convert_state_dict, state_dict_architecture
from maskrcnn_jax.data.image_io import load_image
from maskrcnn_jax.detector import predict_with_intermediates, spec_from_config
from maskrcnn_jax.models import build_model
from maskrcnn_jax.inference.preprocess import preprocess_batch

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
from torchvision_reference import confident_random_torchvision_maskrcnn  # noqa: E402

MIN_SIZE, MAX_SIZE = 320, 512
# Landscape 640x427 and portrait 381x500, so the batch pads both ways.
PHOTOS = ("000000000042.jpg", "000000000073.jpg")
CONFIG = "configs/mask_rcnn_r50_fpn_v2_coco.py"
CLASS_LOGIT_SCALE = 8.0  # confident scores (0.2 to 0.98) with activation-sized BatchNorm statistics


@pytest.fixture(scope="module")
def outputs(request):
    images = [load_image(shared_data_path("coco_val2014_43", "images", name)) for name in PHOTOS]
    tensors = [torch.from_numpy(image.copy()).permute(2, 0, 1).float() / 255 for image in images]
    with torch.no_grad():
        reference = confident_random_torchvision_maskrcnn(
            seed=0, min_size=MIN_SIZE, max_size=MAX_SIZE, class_logit_scale=CLASS_LOGIT_SCALE, architecture="v2",
            statistics_images=tensors)
        image_list, _ = reference.transform(tensors)
        features = reference.backbone(image_list.tensors)
        proposals, _ = reference.rpn(image_list, features)
        detections, _ = reference.roi_heads(features, proposals, image_list.image_sizes)
        masks_28 = [d["masks"][:, 0].numpy() for d in detections]
        detections = reference.transform.postprocess(detections, image_list.image_sizes, [i.shape[:2] for i in images])
    state_dict = {key: value.numpy() for key, value in reference.state_dict().items()}

    config = load_config_file(request.config.rootpath / CONFIG)
    model, spec = build_model(config), spec_from_config(config)
    expected = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))["params"]
    params = convert_state_dict(state_dict, expected)
    batch = preprocess_batch(images, MIN_SIZE, MAX_SIZE, None)
    run = jax.jit(lambda p, b: predict_with_intermediates(model, spec, p, b))
    ours, intermediates = jax.device_get(run(params, batch))
    return {
        "state_dict": state_dict,
        "config": config,
        "torch_features": [f.numpy().transpose(0, 2, 3, 1) for f in features.values()],
        "torch_detections": [{k: v.numpy() for k, v in d.items()} for d in detections],
        "masks_28": masks_28,
        "ours": ours,
        "features": intermediates["features"],
        "images": images,
    }


def test_converter_recognises_v2_and_its_eps(outputs):
    state_dict = outputs["state_dict"]
    assert state_dict_architecture(state_dict)[0] == "v2"
    assert batchnorm_eps(state_dict, architecture="v2")[0] == outputs["config"].model.backbone.bn_eps == 1e-5
    # The statistics are not torchvision's 1/0 defaults: they span orders of magnitude across layers.
    variances = np.concatenate([v for k, v in state_dict.items() if k.endswith("running_var")])
    assert variances.min() < 0.1 and variances.max() > 10, (variances.min(), variances.max())


def test_fpn_features_within_1e4_relative(outputs):
    ours, reference = outputs["features"], outputs["torch_features"]
    assert len(ours) == len(reference) == 5
    relatives = []
    for level, (mine, theirs) in enumerate(zip(ours, reference)):
        assert mine.shape == theirs.shape, level
        relatives.append(float(np.abs(mine - theirs).max() / np.abs(theirs).max()))
    print(f"FPN features, max |ours - torchvision| / max |torchvision| per level: {[f'{r:.1e}' for r in relatives]}")
    assert max(relatives) < 1e-4, relatives


def test_detections_match_boxes_classes_scores(outputs):
    score_errors = []
    for theirs, mine, found, match in matched_pairs(outputs["torch_detections"], outputs["ours"]):
        assert len(theirs["boxes"]) >= 20, "the reference must make detections for this test to mean anything"
        # All found, but for a few near-ties (detection_matching.NEAR_TIES: either may keep a box
        # that ties a threshold or a cut within float32 rounding).
        allowed = allowed_differences(len(theirs["boxes"]))
        score_errors.append(np.abs(mine["scores"][match[found]] - theirs["scores"][found]).max())
        print(f"{len(mine['boxes'])} detections vs torchvision's {len(theirs['boxes'])}; {found.sum()} of theirs "
              f"matched at IoU >= 0.99 with the same class (at most {allowed} may not be); "
              f"max score difference {score_errors[-1]:.1e}")
        assert abs(len(mine["boxes"]) - len(theirs["boxes"])) <= allowed
        assert (~found).sum() <= allowed
    assert max(score_errors) <= 1e-3


def test_mask_probabilities_and_pasted_masks_match(outputs):
    ious, probability_errors = [], []
    for b, (theirs, mine, found, match) in enumerate(matched_pairs(outputs["torch_detections"], outputs["ours"])):
        probability_errors.append(np.abs(mine["masks"][match[found]] - outputs["masks_28"][b][found]).max())
        intersection, union = pasted_mask_overlap(mine, match[found], theirs["masks"][found, 0] > 0.5,
                                                  outputs["images"][b].shape)
        assert union.min() > 0, "every reference mask must cover some pixels for its IoU to mean anything"
        ious.append(intersection / union)
    ious = np.concatenate(ious)
    print(f"pasted mask IoU: mean {ious.mean():.4f}, min {ious.min():.4f} over {len(ious)} masks; "
          f"max 28x28 probability difference {max(probability_errors):.1e}")
    assert ious.mean() >= 0.98
    assert max(probability_errors) <= 1e-3
