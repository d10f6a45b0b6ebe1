"""Training-loss and gradient parity with torchvision's Mask R-CNN R50-FPN (train mode).

Same weights (a seeded torchvision model with FrozenBatchNorm, trainable_backbone_layers=3, converted),
the same real photos and ground truth (COCO polygons of ../shared/data/coco_train2017_85, one image
without objects), and the same samples: torchvision's two `fg_bg_sampler`s are replaced by ones that
return the anchors and RoIs our sampler drew (checking on the way that torchvision's matcher labels
them as we do). Mask targets: torchvision's own `roi_align` of the full-image masks, fed to both
(our default targets come from box crops; their distance is measured in docs/training_targets.md).
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from conftest import shared_data_path  # noqa: E402
from maskrcnn_jax.convert_torchvision import convert_state_dict  # noqa: E402
from maskrcnn_jax.data.coco import CocoSource  # noqa: E402
from maskrcnn_jax.data.transforms import crop_masks_to_boxes, resize_image, resized_shape  # noqa: E402
from maskrcnn_jax.detector import DetectorSpec  # noqa: E402
from maskrcnn_jax.detector.losses import LOSS_NAMES, detector_losses  # noqa: E402
from maskrcnn_jax.models import MaskRCNN, frozen_parameter_mask  # noqa: E402
from torchvision_reference import trainable_torchvision_maskrcnn  # noqa: E402

MIN_SIZE, MAX_SIZE = 320, 512
MAX_INSTANCES = 12
IMAGE_INDICES = (0, 10, 31)  # 8 objects, 8 objects, none
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def real_examples():
    """Photos resized as torchvision would (so its own resize is the identity) with their GT."""
    root = shared_data_path("coco_train2017_85")
    source = CocoSource(root / "annotations.json", root / "images")
    examples = []
    for index in IMAGE_INDICES:
        record = source[index]
        height, width = record["image"].shape[:2]
        new_height, new_width = resized_shape(height, width, MIN_SIZE, MAX_SIZE)
        image = resize_image(record["image"].astype(np.float32) / 255.0, new_height, new_width)
        rows = np.minimum((np.arange(new_height) + 0.5) * height / new_height, height - 1).astype(int)
        cols = np.minimum((np.arange(new_width) + 0.5) * width / new_width, width - 1).astype(int)
        masks = record["masks"][:, rows][:, :, cols]
        scale = np.array([new_width / width, new_height / height] * 2, np.float32)
        boxes = np.asarray(record["boxes"], np.float32).reshape(-1, 4) * scale
        examples.append({"image": image, "boxes": boxes, "labels": np.asarray(record["labels"], np.int64), "masks": masks})
    return examples


def our_batch(examples, canvas):
    """The data pipeline's batch schema for the same images and GT."""
    batch = {key: [] for key in ("image", "image_size", "gt_boxes", "gt_classes", "gt_masks", "gt_valid", "valid")}
    for example in examples:
        height, width = example["image"].shape[:2]
        count = len(example["boxes"])
        padding = MAX_INSTANCES - count
        image = np.zeros((*canvas, 3), np.float32)
        image[:height, :width] = (example["image"] - MEAN) / STD
        batch["image"].append(image)
        batch["image_size"].append([height, width])
        batch["gt_boxes"].append(np.pad(example["boxes"], ((0, padding), (0, 0))))
        batch["gt_classes"].append(np.pad(example["labels"], (0, padding)))
        crops = crop_masks_to_boxes(example["masks"], example["boxes"], 112)
        batch["gt_masks"].append(np.pad(crops, ((0, padding), (0, 0), (0, 0))))
        batch["gt_valid"].append(np.arange(MAX_INSTANCES) < count)
        batch["valid"].append(True)
    batch = {key: np.stack(value) for key, value in batch.items()}
    batch["image_size"] = batch["image_size"].astype(np.int32)
    batch["gt_classes"] = batch["gt_classes"].astype(np.int32)
    return {key: jnp.asarray(value) for key, value in batch.items()}


def torchvision_mask_targets(examples, slots, size):
    """torchvision's mask targets (roi_align of the full-image masks, adaptive sampling) for our mask slots."""
    targets = []
    for example, boxes, matched in zip(examples, np.asarray(slots["boxes"]), np.asarray(slots["matched_gt"])):
        masks = torch.from_numpy(example["masks"]).float()
        if len(masks) == 0:
            targets.append(np.zeros((len(boxes), size, size), np.float32))
            continue
        rois = torch.cat([torch.zeros(len(boxes), 1), torch.from_numpy(np.array(boxes))], dim=1)
        pooled = [torchvision.ops.roi_align(masks[int(m)][None, None], roi[None], (size, size), 1.0)[0, 0]
                  for m, roi in zip(matched, rois)]
        targets.append(torch.stack(pooled).numpy())
    return jnp.asarray(np.stack(targets))


class FixedSampler:
    """Stands in for torchvision's BalancedPositiveNegativeSampler: returns given positive/negative
    index lists per image and records the labels torchvision's matcher gave."""

    def __init__(self, positives, negatives):
        self.positives, self.negatives, self.labels = positives, negatives, None

    def __call__(self, labels):
        self.labels = [label.clone() for label in labels]
        positive_masks, negative_masks = [], []
        for label, positive, negative in zip(labels, self.positives, self.negatives):
            positive_mask = torch.zeros_like(label, dtype=torch.uint8)
            negative_mask = torch.zeros_like(label, dtype=torch.uint8)
            positive_mask[torch.as_tensor(positive, dtype=torch.long)] = 1
            negative_mask[torch.as_tensor(negative, dtype=torch.long)] = 1
            positive_masks.append(positive_mask)
            negative_masks.append(negative_mask)
        return positive_masks, negative_masks


def nearest_proposal(theirs: np.ndarray, box: np.ndarray) -> int:
    """Index of torchvision's proposal equal to ours (up to float32 rounding of the box decode)."""
    distance = np.abs(theirs - box).max(axis=1)
    index = int(np.argmin(distance))
    assert distance[index] < 1e-2, (box, theirs[index])
    return index


def torchvision_candidate_index(our_index, our_proposals, num_padded, their_proposals):
    """Our RoI candidate index (proposal slot p, or GT m at num_padded + m) -> torchvision's
    (its proposal with the same box, or GT m at len(proposals) + m). Matching boxes, not positions:
    proposals with equal scores may come out of the two sorts in either order."""
    mapped = []
    for index in our_index:
        if index >= num_padded:
            mapped.append(index - num_padded + len(their_proposals))
        else:
            mapped.append(nearest_proposal(their_proposals, our_proposals[index]))
    return np.asarray(mapped, np.int64)


def split_samples(index, positive, valid):
    index, positive, valid = (np.asarray(a) for a in (index, positive, valid))
    return ([index[b][valid[b] & positive[b]] for b in range(len(index))],
            [index[b][valid[b] & ~positive[b]] for b in range(len(index))])


@pytest.fixture(scope="module")
def parity():
    examples = real_examples()
    torch_model = trainable_torchvision_maskrcnn(seed=0, min_size=MIN_SIZE, max_size=MAX_SIZE)
    spec = DetectorSpec(num_classes=91)
    model = MaskRCNN(num_classes=91, bn_eps=1e-5)
    state_dict = {key: value.detach().numpy() for key, value in torch_model.state_dict().items()}
    expected = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))["params"]
    params = jax.tree_util.tree_map(jnp.asarray, convert_state_dict(state_dict, expected))

    heights, widths = zip(*(example["image"].shape[:2] for example in examples))
    canvas = (-(-max(heights) // 32) * 32, -(-max(widths) // 32) * 32)
    batch = our_batch(examples, canvas)
    key = jax.random.key(7)

    # Our samples first (their mask targets come from torchvision), then losses and gradients.
    aux = jax.jit(lambda p, b, k: detector_losses(model, spec, p, b, k)[1])(params, batch, key)
    mask_targets = torchvision_mask_targets(examples, aux["mask_slots"], spec.mask_target_size)

    def total_loss(p):
        losses, _ = detector_losses(model, spec, p, batch, key, lambda *_: mask_targets)
        return sum(losses[name] for name in LOSS_NAMES), losses

    (_, our_losses), our_grads = jax.jit(jax.value_and_grad(total_loss, has_aux=True))(params)

    # torchvision's proposals (the RPN's forward, as the training forward computes them), to
    # translate our sampled RoI candidates into its indices.
    images = [torch.from_numpy(example["image"]).permute(2, 0, 1).contiguous() for example in examples]
    with torch.no_grad():
        image_list, _ = torch_model.transform(images)
        rpn_features = torch_model.backbone(image_list.tensors)
        objectness, deltas = torch_model.rpn.head(list(rpn_features.values()))
        anchors = torch_model.rpn.anchor_generator(image_list, list(rpn_features.values()))
        levels = [o[0].numel() for o in objectness]
        objectness, deltas = torchvision.models.detection.rpn.concat_box_prediction_layers(objectness, deltas)
        decoded = torch_model.rpn.box_coder.decode(deltas, anchors).view(len(images), -1, 4)
        their_proposals, _ = torch_model.rpn.filter_proposals(decoded, objectness, image_list.image_sizes, levels)
    their_proposals = [proposals.numpy() for proposals in their_proposals]
    our_proposals = np.asarray(aux["proposals"])
    roi_index = np.stack([
        torchvision_candidate_index(index, proposals, our_proposals.shape[1], theirs)
        for index, proposals, theirs in zip(np.asarray(aux["rois"]["index"]), our_proposals, their_proposals)])

    # torchvision's training forward and backward with our samples.
    rpn_sampler = FixedSampler(*split_samples(aux["rpn"]["index"], aux["rpn"]["positive"], aux["rpn"]["valid"]))
    roi_sampler = FixedSampler(*split_samples(roi_index, aux["rois"]["positive"], aux["rois"]["valid"]))
    torch_model.rpn.fg_bg_sampler = rpn_sampler
    torch_model.roi_heads.fg_bg_sampler = roi_sampler
    targets = [{"boxes": torch.from_numpy(e["boxes"]), "labels": torch.from_numpy(e["labels"]),
                "masks": torch.from_numpy(e["masks"])} for e in examples]
    torch_losses = torch_model(images, targets)
    sum(torch_losses.values()).backward()

    torch_grads = {}
    named = dict(torch_model.named_parameters())
    for name, value in torch_model.state_dict().items():
        parameter = named.get(name)
        grad = parameter.grad if parameter is not None and parameter.grad is not None else None
        torch_grads[name] = grad.numpy() if grad is not None else np.zeros(value.shape, np.float32)
    torch_grads = convert_state_dict(torch_grads, expected)
    return dict(examples=examples, aux=aux, their_proposals=their_proposals, rpn_sampler=rpn_sampler,
                roi_sampler=roi_sampler, roi_index=roi_index, our_losses=our_losses, torch_losses=torch_losses,
                our_grads=our_grads, torch_grads=torch_grads, params=params,
                num_trainable=sum(p.requires_grad for p in torch_model.parameters()))


def test_parity_proposals_equal_torchvision_training_proposals(parity):
    for b, theirs in enumerate(parity["their_proposals"]):
        valid = np.asarray(parity["aux"]["proposal_valid"][b])
        assert valid.sum() == len(theirs) > 1000
        ours = np.asarray(parity["aux"]["proposals"][b])[valid]
        matched = {nearest_proposal(theirs, box) for box in ours}
        assert len(matched) == len(theirs)


def test_parity_matcher_labels_of_our_samples_equal_torchvision(parity):
    aux = parity["aux"]
    rpn_positive, rpn_negative = split_samples(aux["rpn"]["index"], aux["rpn"]["positive"], aux["rpn"]["valid"])
    roi_positive, roi_negative = split_samples(parity["roi_index"], aux["rois"]["positive"], aux["rois"]["valid"])
    for b in range(len(parity["examples"])):
        rpn_labels = parity["rpn_sampler"].labels[b].numpy()
        assert (rpn_labels[rpn_positive[b]] == 1).all() and (rpn_labels[rpn_negative[b]] == 0).all()
        roi_labels = parity["roi_sampler"].labels[b].numpy()
        assert (roi_labels[roi_positive[b]] > 0).all() and (roi_labels[roi_negative[b]] == 0).all()
        positive_classes = np.asarray(aux["rois"]["classes"][b])[np.asarray(aux["rois"]["positive"][b])]
        np.testing.assert_array_equal(np.sort(roi_labels[roi_positive[b]]), np.sort(positive_classes))
    # The image without objects: every sample negative, no mask slot used.
    assert len(rpn_positive[2]) == 0 and len(rpn_negative[2]) == 256 and len(roi_positive[2]) == 0
    assert len(roi_positive[0]) > 0 and len(rpn_positive[0]) > 0


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_parity_loss_equals_torchvision(parity, name):
    ours = float(parity["our_losses"][name])
    theirs = float(parity["torch_losses"][name].detach())
    assert np.isfinite(ours) and theirs > 0
    assert abs(ours - theirs) <= 1e-4 * abs(theirs), (name, ours, theirs)


def test_parity_grad_of_every_trainable_parameter_equals_torchvision(parity):
    frozen = frozen_parameter_mask(parity["params"], trainable_backbone_layers=3)
    flat_frozen = jax.tree_util.tree_leaves_with_path(frozen)
    ours = jax.tree_util.tree_leaves(parity["our_grads"])
    theirs = jax.tree_util.tree_leaves(parity["torch_grads"])
    errors = {}
    for (path, is_frozen), our_grad, their_grad in zip(flat_frozen, ours, theirs):
        if is_frozen:
            continue
        reference = np.linalg.norm(their_grad)
        assert reference > 0, jax.tree_util.keystr(path)
        errors[jax.tree_util.keystr(path)] = np.linalg.norm(np.asarray(our_grad) - their_grad) / reference
    assert len(errors) == parity["num_trainable"]  # the same parameters are frozen in both
    worst = max(errors, key=errors.get)
    assert errors[worst] <= 1e-3, (worst, errors[worst])
