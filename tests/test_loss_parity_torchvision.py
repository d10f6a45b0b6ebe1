"""Training-loss and gradient parity with torchvision's Mask R-CNN R50-FPN, v1 and v2 (train mode).

Same weights (a seeded torchvision model, converted: v1 with FrozenBatchNorm and
trainable_backbone_layers=3; v2 with BatchNorm normalising with batch statistics, every layer trainable),
the same real photos and ground truth (COCO polygons of ../shared/data/coco_train2017_85, one image
without objects), and the same samples: torchvision's RoI heads get our proposals (its own are
compared with ours separately), and its two `fg_bg_sampler`s are replaced by ones that return the
anchors and RoIs our sampler drew (checking on the way that torchvision's matcher labels them as we do). Beyond
the samples, every anchor's and RoI candidate's matcher label and each image's sample counts are compared with
torchvision's own matcher and sampler caps (its RPN under our rule for anchors in the canvas's padding).
Mask targets: torchvision's own `roi_align` of the full-image masks, fed to both (our default targets
come from box crops; their distance is measured in docs/training_targets.md). Last, real training steps
from there (our train step with our COCO configs' optimizer against torch.optim.SGD with torchvision's
recipe and warm-up), on the fixture's compiled loss and gradient; after the first step both sides
train on our mask targets (given to torchvision's loss), which needs one pass of ours per step.

The module fixture `parity` is parametrized by architecture; tests/conftest.py makes its v1 and v2
halves two pytest-xdist scopes, so that `make test` builds the two slowest fixtures of the suite on
two workers at once.
"""

import contextlib
import copy
import pathlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
from flax.traverse_util import flatten_dict  # noqa: E402

from conftest import shared_data_path  # noqa: E402
from maskrcnn_jax.command_line import load_config_file  # noqa: E402
from maskrcnn_jax.convert.torchvision import convert_state_dict  # noqa: E402
from maskrcnn_jax.data.coco import CocoSource  # noqa: E402
from maskrcnn_jax.data.transforms import crop_masks_to_boxes, resize_image, resized_shape  # noqa: E402
from maskrcnn_jax.detector import pyramid_anchors, spec_from_config  # noqa: E402
from maskrcnn_jax.detector.losses import LOSS_NAMES, crop_mask_targets_batch, detector_losses  # noqa: E402
from maskrcnn_jax.detector.spec import NORM_STATISTICS  # noqa: E402
from maskrcnn_jax.detector.targets import roi_labels, rpn_labels  # noqa: E402
from maskrcnn_jax.models import MaskRCNN, build_model, frozen_parameter_mask  # noqa: E402
from maskrcnn_jax.training.setup import optimizer_from_config  # noqa: E402
from maskrcnn_jax.training.state import TrainState  # noqa: E402
from maskrcnn_jax.training.step import train_step_fn  # noqa: E402
from torchvision_reference import trainable_torchvision_maskrcnn  # noqa: E402

# Three photos of different sizes on one square canvas, as a padded COCO batch holds them: resized
# to 256x383 (landscape, 38 objects: more RoI foreground than the RoI sampler's 128 positives),
# 393x256 (portrait, 18 objects) and 256x341 (landscape, no objects).
MIN_SIZE, MAX_SIZE = 256, 416
CANVAS = (416, 416)
MAX_INSTANCES = 38
IMAGE_INDICES = (38, 19, 31)
CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"
OUR_RECIPES = {"v1": "mask_rcnn_r50_fpn_coco.py", "v2": "mask_rcnn_r50_fpn_v2_coco.py"}
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


def torchvision_mask_targets(examples, slots, size, aligned=False):
    """torchvision's mask targets (roi_align of the full-image masks, adaptive sampling) for our mask
    slots; aligned=True: detectron2's half-pixel convention for the same targets."""
    targets = []
    for example, boxes, matched in zip(examples, np.asarray(slots["boxes"]), np.asarray(slots["matched_gt"])):
        masks = torch.from_numpy(example["masks"]).float()
        if len(masks) == 0:
            targets.append(np.zeros((len(boxes), size, size), np.float32))
            continue
        rois = torch.cat([torch.zeros(len(boxes), 1), torch.from_numpy(np.array(boxes))], dim=1)
        pooled = [torchvision.ops.roi_align(masks[int(m)][None, None], roi[None], (size, size), 1.0, aligned=aligned)[0, 0]
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


def unmatched_proposals(ours: np.ndarray, theirs: np.ndarray, tolerance: float = 1e-2) -> int:
    """How many boxes of `ours` [N, 4] have no box of `theirs` [N', 4] within `tolerance` pixels
    (each coordinate; float32 rounding of the box decode moves them by ~1e-4)."""
    distance = np.abs(ours[:, None, :] - theirs[None, :, :]).max(axis=-1)
    return int(np.sum(distance.min(axis=1) > tolerance))


def torchvision_candidate_index(our_index, proposal_valid):
    """Our RoI candidate index (proposal slot p of [P], or GT m at P + m) -> torchvision's, when it
    is given our valid proposals in slot order: (the rank of slot p among the valid slots, or GT m at
    the number of valid proposals + m)."""
    num_padded, num_valid = len(proposal_valid), int(proposal_valid.sum())
    rank = np.cumsum(proposal_valid) - 1
    return np.asarray([index - num_padded + num_valid if index >= num_padded else rank[index] for index in our_index],
                      np.int64)


def split_samples(index, positive, valid):
    index, positive, valid = (np.asarray(a) for a in (index, positive, valid))
    return ([index[b][valid[b] & positive[b]] for b in range(len(index))],
            [index[b][valid[b] & ~positive[b]] for b in range(len(index))])


# torchvision's trainable backbone layers: v1's recipe 3; v2 built without backbone weights trains all 5.
TRAINABLE_BACKBONE_LAYERS = {"v1": 3, "v2": 5}


def parity_frozen_mask(model: MaskRCNN, params) -> dict:
    return frozen_parameter_mask(params, TRAINABLE_BACKBONE_LAYERS[model.architecture], norm=model.norm)


@pytest.fixture(scope="module", params=["v1", "v2"])
def parity(request):
    return compute_parity(request.param)


def compute_parity(architecture: str) -> dict:
    """Everything the parity tests compare, computed once per architecture (the slowest setup of the
    suite: about 55 s for v1 and 125 s for v2 on the idle 2-core machine). Why it takes that long:
    one compile of our R50-FPN loss and gradient (30-40 s), torchvision's training step in float32,
    and for v2 once more in float64 (the gradient reference), on 3 real photos on a 416x416 canvas,
    where every image still fills its 2000 training proposals, so the top-2000 cut and NMS are
    exercised as on COCO photos."""
    examples = real_examples()
    torch_model = trainable_torchvision_maskrcnn(seed=0, min_size=MIN_SIZE, max_size=MAX_SIZE, architecture=architecture)
    # torchvision pads its batch to a multiple of size_divisible: the canvas's side pads it to our
    # canvas. The same canvas on both sides, not torchvision's natural padding, because v2's
    # train-mode BatchNorm takes its statistics over the padding too, and both RPNs rank the anchors
    # of the padding among their per-level top 2000: the features and proposals are equal only so.
    torch_model.transform.size_divisible = CANVAS[0]
    # Our side is our recipe: the spec (targets, samplers, v1's chunked mask head) and model of the
    # COCO config; torchvision's side keeps its own defaults.
    config = load_config_file(CONFIGS / OUR_RECIPES[architecture])
    spec = spec_from_config(config)
    model = build_model(config)
    state_dict = {key: value.detach().numpy() for key, value in torch_model.state_dict().items()}
    expected = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))["params"]
    params = jax.tree_util.tree_map(jnp.asarray, convert_state_dict(state_dict, expected))

    canvas = CANVAS
    batch = our_batch(examples, canvas)
    key = jax.random.key(7)

    # One compiled program for every pass of the module: both of `our_training_pass`, the crop pass
    # below, and the later steps of the training-steps test (at other parameters of the same shapes).
    # use_crops (a bool scalar): our own mask targets (the pipeline's box crops, the training
    # default) in place of mask_targets.
    @jax.jit
    def losses_and_grads(p, mask_targets, use_crops):
        def targets(batch, slots, size):
            return jnp.where(use_crops, crop_mask_targets_batch(batch, slots, size), mask_targets)

        def total_loss(p):
            losses, aux = detector_losses(model, spec, p, batch, key, targets)
            return sum(losses[name] for name in LOSS_NAMES), (losses, aux)
        return jax.value_and_grad(total_loss, has_aux=True)(p)

    (our_loss, (our_losses, aux)), our_grads = our_training_pass(losses_and_grads, params, examples, spec)
    # The same samples with our own mask targets: one more pass of the same compile.
    (_, (crop_losses, crop_aux)), crop_grads = losses_and_grads(params, no_mask_targets(examples, spec), True)
    crop_targets = crop_aux["mask_targets"]
    feature_shapes = jax.eval_shape(lambda p, x: model.apply({"params": p}, x, method="features"), params,
                                    batch["image"])
    our_anchors, _ = pyramid_anchors(spec, canvas, [level.shape[1:3] for level in feature_shapes])

    # torchvision's own proposals (the RPN's forward, as the training forward computes them), which
    # test_parity_proposals_equal_torchvision_training_proposals compares with ours.
    images = [torch.from_numpy(example["image"]).permute(2, 0, 1).contiguous() for example in examples]
    # In train mode (v2's BatchNorm) this forward moves the running statistics: put them back after.
    buffers = {name: buffer.clone() for name, buffer in torch_model.named_buffers()}
    with torch.no_grad():
        image_list, _ = torch_model.transform(images)
        rpn_features = torch_model.backbone(image_list.tensors)
        objectness, deltas = torch_model.rpn.head(list(rpn_features.values()))
        anchors = torch_model.rpn.anchor_generator(image_list, list(rpn_features.values()))
        levels = [o[0].numel() for o in objectness]
        objectness, deltas = torchvision.models.detection.rpn.concat_box_prediction_layers(objectness, deltas)
        decoded = torch_model.rpn.box_coder.decode(deltas, anchors).view(len(images), -1, 4)
        their_proposals, _ = torch_model.rpn.filter_proposals(decoded, objectness, image_list.image_sizes, levels)
        for name, buffer in torch_model.named_buffers():
            buffer.copy_(buffers[name])
    their_proposals = [proposals.numpy() for proposals in their_proposals]
    their_anchors = [image_anchors.numpy() for image_anchors in anchors]
    samples, our_proposals, roi_index = torchvision_samples(aux)

    # torchvision's training forward and backward with our samples, drawn from our proposals (given
    # to its RoI heads in place of its own: proposals are detached in both, and a near-tie in the
    # proposals' sort or NMS can come out either way on another CPU kind, issue 26); for v2 also in
    # float64, the reference its gradients are measured against.
    # torchvision's own samplers (before torch_training_step replaces them): their caps are its recipe's.
    their_samplers = {"rpn": torch_model.rpn.fg_bg_sampler, "roi": torch_model.roi_heads.fg_bg_sampler}
    float64_model = copy.deepcopy(torch_model).double() if architecture == "v2" else None
    torch_losses, torch_grads, rpn_sampler, roi_sampler = torch_training_step(torch_model, examples, samples, expected,
                                                                              our_proposals)
    state_after = convert_state_dict({key: value.detach().numpy() for key, value in torch_model.state_dict().items()},
                                     expected)
    float64_grads = (torch_training_step(float64_model, examples, samples, expected, our_proposals)[1]
                     if float64_model is not None else None)
    return dict(model=model, spec=spec, architecture=architecture, examples=examples, batch=batch, aux=aux,
                their_proposals=their_proposals, our_anchors=our_anchors, their_anchors=their_anchors,
                their_samplers=their_samplers, torch_rpn=torch_model.rpn,
                rpn_sampler=rpn_sampler, roi_sampler=roi_sampler, roi_index=roi_index, our_losses=our_losses,
                torch_losses=torch_losses, our_grads=our_grads, torch_grads=torch_grads, params=params,
                torch_params_after_step=state_after, float64_grads=float64_grads, our_proposals=our_proposals,
                num_trainable=sum(p.requires_grad for p in torch_model.parameters()),
                losses_and_grads=losses_and_grads, our_loss=our_loss, torch_model=torch_model,
                crop_targets=crop_targets, crop_losses=crop_losses, crop_grads=crop_grads)


def no_mask_targets(examples, spec) -> jax.Array:
    """Zeros in the shape of the mask targets [B, Rm, T, T]: for a pass that needs none."""
    return jnp.zeros((len(examples), spec.mask_rois_per_image, spec.mask_target_size, spec.mask_target_size))


def our_training_pass(losses_and_grads, params, examples, spec):
    """((total loss, (losses, aux)), gradients) of the fixture's compiled `losses_and_grads` at
    `params`, with torchvision's mask targets: a first pass with placeholder targets gives the mask
    slots (the samples do not depend on the targets), the second takes the losses with their targets."""
    (_, (_, aux)), _ = losses_and_grads(params, no_mask_targets(examples, spec), False)
    mask_targets = torchvision_mask_targets(examples, aux["mask_slots"], spec.mask_target_size)
    return losses_and_grads(params, mask_targets, False)


@contextlib.contextmanager
def torchvision_given_mask_targets(aux):
    """Within: torchvision's mask targets are ours (aux["mask_targets"] of our mask slots), looked up by
    each positive RoI's box and matched GT index, so that both sides train on the same targets
    without the second pass `our_training_pass` needs for torchvision's. Images in batch order."""
    slots = {key: np.asarray(value) for key, value in aux["mask_slots"].items()}
    targets = np.asarray(aux["mask_targets"])
    tables = iter([{(tuple(box), int(gt)): target
                    for box, gt, target, valid in zip(slots["boxes"][b], slots["matched_gt"][b], targets[b], slots["valid"][b])
                    if valid} for b in range(len(targets))])

    def project_masks_on_boxes(gt_masks, boxes, matched_idxs, size):
        table = next(tables)
        rows = [table[(tuple(box), int(gt))] for box, gt in zip(boxes.detach().numpy(), matched_idxs.numpy())]
        return torch.from_numpy(np.stack(rows) if rows else np.zeros((0, size, size), np.float32)).to(boxes.dtype)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torchvision.models.detection.roi_heads, "project_masks_on_boxes", project_masks_on_boxes)
        yield
    assert next(tables, None) is None, "torchvision took the mask targets of fewer images than the batch holds"


def torchvision_samples(aux):
    """What torchvision's training step needs from one pass of ours: (the samples for
    `torch_training_step`, our valid proposals per image [P_b, 4], the RoI samples' candidate indices
    in torchvision's numbering [B, R])."""
    proposal_valid = np.asarray(aux["proposal_valid"])
    proposals = [boxes[valid] for boxes, valid in zip(np.asarray(aux["proposals"]), proposal_valid)]
    roi_index = np.stack([torchvision_candidate_index(index, valid)
                          for index, valid in zip(np.asarray(aux["rois"]["index"]), proposal_valid)])
    samples = dict(rpn=split_samples(aux["rpn"]["index"], aux["rpn"]["positive"], aux["rpn"]["valid"]),
                   roi=split_samples(roi_index, aux["rois"]["positive"], aux["rois"]["valid"]))
    return samples, proposals, roi_index


def torch_training_step(torch_model, examples, samples, expected, proposals):
    """torchvision's training forward and backward with the given samples, drawn from the given
    proposals (numpy [P_b, 4] per image), in the model's precision.

    Returns (losses, gradients converted to our parameter tree as float64 numpy, the two samplers).
    """
    dtype = next(torch_model.parameters()).dtype
    rpn_sampler, roi_sampler = FixedSampler(*samples["rpn"]), FixedSampler(*samples["roi"])
    torch_model.rpn.fg_bg_sampler = rpn_sampler
    torch_model.roi_heads.fg_bg_sampler = roi_sampler
    fixed_proposals = [torch.from_numpy(boxes).to(dtype) for boxes in proposals]
    torch_model.rpn.filter_proposals = lambda *args, **kwargs: (fixed_proposals, None)
    images = [torch.from_numpy(e["image"]).permute(2, 0, 1).contiguous().to(dtype) for e in examples]
    targets = [{"boxes": torch.from_numpy(e["boxes"]).to(dtype), "labels": torch.from_numpy(e["labels"]),
                "masks": torch.from_numpy(e["masks"])} for e in examples]
    torch_losses = torch_model(images, targets)
    sum(torch_losses.values()).backward()
    grads = {}
    named = dict(torch_model.named_parameters())
    for name, value in torch_model.state_dict().items():
        parameter = named.get(name)
        grad = parameter.grad if parameter is not None and parameter.grad is not None else None
        grads[name] = grad.double().numpy() if grad is not None else np.zeros(value.shape)
    return torch_losses, convert_state_dict(grads, expected), rpn_sampler, roi_sampler


# Near-ties allowed between the two proposal sets, per image and direction. Float32 rounding moves
# objectness scores by ~1e-6 relative, so a box tied within that at the per-level top-2000 cut or at
# NMS's IoU 0.7 can go either way, and which way depends on the CPU kind (issue 26: one box of ~2000
# on an Intel Xeon, none on the developers' earlier machine). A real bug moves far more: a wrong NMS
# threshold, top-n, clip or decode changes hundreds of boxes, or every box.
NEAR_TIES = 3


def test_parity_proposals_equal_torchvision_training_proposals(parity):
    for ours, theirs in zip(parity["our_proposals"], parity["their_proposals"]):
        assert len(theirs) > 1000 and abs(len(ours) - len(theirs)) <= NEAR_TIES
        ours_unmatched, theirs_unmatched = unmatched_proposals(ours, theirs), unmatched_proposals(theirs, ours)
        print(f"{parity['architecture']} proposals: {len(ours)} vs {len(theirs)}, unmatched {ours_unmatched} / {theirs_unmatched}")
        assert ours_unmatched <= NEAR_TIES and theirs_unmatched <= NEAR_TIES


def test_parity_matcher_labels_of_our_samples_equal_torchvision(parity):
    aux = parity["aux"]
    rpn_positive, rpn_negative = split_samples(aux["rpn"]["index"], aux["rpn"]["positive"], aux["rpn"]["valid"])
    roi_positive, roi_negative = split_samples(parity["roi_index"], aux["rois"]["positive"], aux["rois"]["valid"])
    for b in range(len(parity["examples"])):
        their_rpn = parity["rpn_sampler"].labels[b].numpy()
        assert (their_rpn[rpn_positive[b]] == 1).all() and (their_rpn[rpn_negative[b]] == 0).all()
        their_roi = parity["roi_sampler"].labels[b].numpy()
        assert (their_roi[roi_positive[b]] > 0).all() and (their_roi[roi_negative[b]] == 0).all()
        positive_classes = np.asarray(aux["rois"]["classes"][b])[np.asarray(aux["rois"]["positive"][b])]
        np.testing.assert_array_equal(np.sort(their_roi[roi_positive[b]]), np.sort(positive_classes))
    # The image without objects: every sample negative, no mask slot used.
    assert len(rpn_positive[2]) == 0 and len(rpn_negative[2]) == 256 and len(roi_positive[2]) == 0
    assert len(roi_positive[0]) > 0 and len(rpn_positive[0]) > 0


def anchor_positions(ours: np.ndarray, theirs: np.ndarray) -> np.ndarray:
    """For each of `theirs` [A', 4], the index of the identical anchor in `ours` [A, 4] (both grids
    start at the canvas origin with the same strides, sizes and ratios; a canvas larger than
    torchvision's padded batch only adds anchors). Fails when one has none."""
    index = {tuple(box): i for i, box in enumerate(np.round(ours, 2).tolist())}
    positions = [index.get(tuple(box), -1) for box in np.round(theirs, 2).tolist()]
    assert min(positions) >= 0, "a torchvision anchor is missing from ours"
    return np.asarray(positions)


def torchvision_rpn_labels(rpn, anchors: np.ndarray, boxes: np.ndarray, image_size) -> np.ndarray:
    """torchvision's own `assign_targets_to_anchors` labels (1 / 0 / -1) of its anchors [A', 4] for
    GT boxes [M', 4], under our padding rule: an anchor whose centre lies outside the photo
    (image_size (h, w)) has IoU -1 with every GT in its match quality matrix (so it is nobody's
    low-quality match) and is labelled ignored (-1)."""
    height, width = image_size
    center_x, center_y = (anchors[:, 0] + anchors[:, 2]) / 2, (anchors[:, 1] + anchors[:, 3]) / 2
    outside = torch.from_numpy(~((center_x >= 0) & (center_x < width) & (center_y >= 0) & (center_y < height)))
    own_similarity = rpn.box_similarity
    rpn.box_similarity = lambda gt, candidates: own_similarity(gt, candidates).masked_fill(outside[None, :], -1.0)
    try:
        labels, _ = rpn.assign_targets_to_anchors([torch.from_numpy(anchors)], [{"boxes": torch.from_numpy(boxes)}])
    finally:
        rpn.box_similarity = own_similarity
    return labels[0].masked_fill(outside, -1.0).numpy().astype(np.int64)


def expected_counts(labels: np.ndarray, sampler) -> tuple[int, int]:
    """(positives, negatives) torchvision's BalancedPositiveNegativeSampler `sampler` draws from full
    labels (> 0 positive, 0 negative): min(cap, available) each."""
    positives = min(int(sampler.batch_size_per_image * sampler.positive_fraction), int(np.sum(labels > 0)))
    return positives, min(sampler.batch_size_per_image - positives, int(np.sum(labels == 0)))


def test_parity_full_matcher_labels_and_sample_counts_equal_torchvision(parity):
    """Every anchor's and every RoI candidate's label, not only the sampled ones, equals torchvision's
    matcher run by torchvision itself, and per image our positive and negative sample counts are
    min(cap, available) of those labels with torchvision's own sampler caps (RPN 256 at 50%
    positives, RoI heads 512 at 25%): a stricter or looser matcher (thresholds, ignore band,
    low-quality matches) or other caps fail here even where the sampled candidates agree.

    RPN: torchvision's `assign_targets_to_anchors` on its anchors under our padding rule (anchors
    centred outside the photo's image_size ignored, and no GT's low-quality match; torchvision itself
    draws them as negatives from the zero padding of its batch), against `match_boxes` with
    spec.rpn_sampler on our anchors; our anchors that torchvision's padded batch lacks must be
    ignored. RoI heads: the full labels torchvision's `assign_targets_to_proposals` gave our valid
    proposals + its appended GT in its training step (recorded by its sampler), against ours.
    """
    spec, aux, batch = parity["spec"], parity["aux"], parity["batch"]
    samplers = parity["their_samplers"]
    proposal_valid = np.asarray(aux["proposal_valid"])
    foreground = []  # per image: (anchors, RoI candidates) torchvision labels foreground
    for b, example in enumerate(parity["examples"]):
        image_size = np.asarray(batch["image_size"][b])
        # RPN: every anchor.
        theirs = torchvision_rpn_labels(parity["torch_rpn"], parity["their_anchors"][b], example["boxes"], image_size)
        ours = np.asarray(rpn_labels(jnp.asarray(parity["our_anchors"]), batch["gt_boxes"][b], batch["gt_valid"][b],
                                     image_size, spec.rpn_sampler)[1])
        positions = anchor_positions(parity["our_anchors"], parity["their_anchors"][b])
        print(f"{parity['architecture']} image {b} RPN labels (1 / 0 / -1): torchvision "
              f"{[int(np.sum(theirs == v)) for v in (1, 0, -1)]}, ours {[int(np.sum(ours == v)) for v in (1, 0, -1)]}")
        np.testing.assert_array_equal(ours[positions], theirs)
        foreground.append([int(np.sum(theirs == 1))])
        assert (np.delete(ours, positions) == -1).all()  # anchors beyond torchvision's batch: in our padding
        rpn = {key: np.asarray(aux["rpn"][key][b]) for key in ("index", "positive", "valid")}
        sampled = ours[rpn["index"][rpn["valid"]]]
        np.testing.assert_array_equal(sampled, rpn["positive"][rpn["valid"]].astype(int))  # never an ignored anchor
        counts = (int(np.sum(rpn["positive"])), int(np.sum(rpn["valid"] & ~rpn["positive"])))
        assert counts == expected_counts(theirs, samplers["rpn"]), (b, counts)

        # RoI heads: every valid proposal and GT candidate.
        theirs = parity["roi_sampler"].labels[b].numpy()
        matched, ours, _ = roi_labels(aux["proposals"][b], aux["proposal_valid"][b], batch["gt_boxes"][b],
                                      batch["gt_valid"][b], spec.roi_sampler)
        ours = np.asarray(jnp.where(ours == 1, batch["gt_classes"][b][matched], ours))  # torchvision labels by class
        candidates = np.nonzero(np.concatenate([proposal_valid[b], np.asarray(batch["gt_valid"][b])]))[0]
        assert len(candidates) == len(theirs)
        np.testing.assert_array_equal(torchvision_candidate_index(candidates, proposal_valid[b]),
                                      np.arange(len(theirs)))
        np.testing.assert_array_equal(ours[candidates], theirs)
        foreground[b].append(int(np.sum(theirs > 0)))
        rois = {key: np.asarray(aux["rois"][key][b]) for key in ("positive", "valid")}
        counts = (int(np.sum(rois["positive"])), int(np.sum(rois["valid"] & ~rois["positive"])))
        print(f"{parity['architecture']} image {b} samples (positive, negative): RPN "
              f"{int(np.sum(rpn['positive']))}, {int(np.sum(rpn['valid'] & ~rpn['positive']))}; RoI {counts}; "
              f"RoI candidates {len(theirs)}, foreground {int(np.sum(theirs > 0))}")
        assert counts == expected_counts(theirs, samplers["roi"]), (b, counts)
    # The crowded photo has more foreground than either sampler's positive cap, so that a wrong
    # positive fraction (e.g. 0.3) changes its counts.
    caps = [int(sampler.batch_size_per_image * sampler.positive_fraction) for sampler in samplers.values()]
    assert all(available > cap for available, cap in zip(foreground[0], caps)), (foreground, caps)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_parity_loss_equals_torchvision(parity, name):
    ours = float(parity["our_losses"][name])
    theirs = float(parity["torch_losses"][name].detach())
    assert np.isfinite(ours) and theirs > 0
    assert abs(ours - theirs) <= 1e-4 * abs(theirs), (name, ours, theirs)


# Our crop mask targets against torchvision's on the same samples (docs/training_targets.md, "What
# our mask targets change in training"): loss_mask within MASK_LOSS_BOUND, relative, and the mask
# head's and FPN's gradients no farther from torchvision's than detectron2's half-pixel convention
# for the same targets (roi_align aligned=True) puts them, times CONVENTION_FACTOR.
MASK_LOSS_BOUND = 0.02
CONVENTION_FACTOR = 2


def test_our_crop_mask_targets_change_loss_mask_and_gradients_by_at_most_the_bound(parity):
    """Our default mask targets (the pipeline's 112x112 box crops resampled per slot by
    `crop_mask_targets`) against torchvision's (`roi_align` of its full-image masks), same model, same
    samples: loss_mask moves by at most MASK_LOSS_BOUND relative, and each gradient leaf of the mask
    head and of the FPN (which the mask loss reaches through RoIAlign) by at most CONVENTION_FACTOR x
    what torchvision's targets in detectron2's convention (aligned=True: the RoI not shifted by half a
    pixel) move it, or 1e-3. Both are resamplings of one polygon; where they disagree, at mask edges,
    the annotation itself is uncertain by a pixel or more. Measured (Intel Xeon, 2026-12-05): loss_mask
    1.8e-3 (v1) and 9.3e-4 (v2) relative; gradient leaves up to 1.1e-2 (v1) and 1.1e-1 (v2, whose
    mask head normalises with BatchNorm), at most 1.1x (v1) and 1.3x (v2) the convention's."""
    losses_and_grads, aux, spec = parity["losses_and_grads"], parity["aux"], parity["spec"]
    valid = np.asarray(aux["mask_slots"]["valid"])
    convention_targets = torchvision_mask_targets(parity["examples"], aux["mask_slots"], spec.mask_target_size,
                                                  aligned=True)
    (_, (convention_losses, _)), convention_grads = losses_and_grads(parity["params"], convention_targets, False)
    frozen = parity_frozen_mask(parity["model"], parity["params"])
    compared = ("['mask_convs']", "['mask_predictor']", "['fpn']")
    rows = {}
    for name, targets, losses, grads in (("ours", parity["crop_targets"], parity["crop_losses"], parity["crop_grads"]),
                                         ("aligned", convention_targets, convention_losses, convention_grads)):
        errors = {leaf: error for leaf, error in relative_errors(grads, parity["our_grads"], frozen).items()
                  if leaf.startswith(compared)}
        for loss_name in LOSS_NAMES:  # the targets reach no other loss
            if loss_name != "loss_mask":
                assert float(losses[loss_name]) == float(parity["our_losses"][loss_name]), (name, loss_name)
        rows[name] = dict(target=float(np.mean(np.abs(np.asarray(targets) - np.asarray(aux["mask_targets"]))[valid])),
                          loss=abs(float(losses["loss_mask"]) / float(parity["our_losses"]["loss_mask"]) - 1),
                          errors=errors)
        print(f"{parity['architecture']} {name} mask targets vs torchvision's, {int(valid.sum())} slots: mean |target "
              f"difference| {rows[name]['target']:.4f}, loss_mask {rows[name]['loss']:.2e}, {len(errors)} mask-head "
              f"and FPN gradient leaves: median {np.median(list(errors.values())):.2e}, max {max(errors.values()):.2e}")
    ours, aligned = rows["ours"]["errors"], rows["aligned"]["errors"]
    allowed = {leaf: max(1e-3, CONVENTION_FACTOR * aligned[leaf]) for leaf in ours}
    worst = max(ours, key=lambda leaf: ours[leaf] / allowed[leaf])
    print(f"worst leaf {worst}: ours {ours[worst]:.2e}, aligned {aligned[worst]:.2e}")
    assert 0 < rows["ours"]["target"] and rows["ours"]["loss"] <= MASK_LOSS_BOUND, rows["ours"]["loss"]
    assert ours[worst] <= allowed[worst], (worst, ours[worst], aligned[worst])


def relative_errors(ours, theirs, frozen) -> dict:
    """{leaf path: |ours - theirs| / |theirs|} over the leaves `frozen` marks False."""
    errors = {}
    for (path, is_frozen), our_leaf, their_leaf in zip(jax.tree_util.tree_leaves_with_path(frozen),
                                                        jax.tree_util.tree_leaves(ours), jax.tree_util.tree_leaves(theirs)):
        if not is_frozen:
            reference = np.linalg.norm(their_leaf)
            assert reference > 0, jax.tree_util.keystr(path)
            errors[jax.tree_util.keystr(path)] = np.linalg.norm(np.asarray(our_leaf, np.float64) - their_leaf) / reference
    return errors


# v2's bound against float64, per leaf: NOISE_FACTOR x torchvision's float32 distance from its
# float64 (the noise), at least 1e-3, and never above BUG_SCALE.
NOISE_FACTOR = 4
BUG_SCALE = 0.5


def test_parity_grad_of_every_trainable_parameter_equals_torchvision(parity):
    """v1: every trainable leaf's gradient within 2e-3 of torchvision's (norm of the difference / norm).
    Measured (Intel Xeon, 2026-12-05): worst leaf 7.0e-4 (layer3's kernels, the float32 rounding of
    two summation orders through a loss of ~100 on 38 objects).

    v2: training-mode BatchNorm makes the gradients ill-conditioned (each BatchNorm's backward
    subtracts the mean and the projection on its normalised input, and the float32 rounding of the
    forward grows layer by layer towards the input), so any float32 gradient is percents from the
    float64 one deep in the backbone. The reference is torchvision in float64; the float32 noise of a
    leaf is torchvision's own float32 distance from it; ours must be within NOISE_FACTOR x that (at
    least 1e-3). Measured (Intel Xeon, 2026-12-05): torchvision's noise up to 1.4e-2, ours up to
    1.6e-2, at most 1.6x torchvision's on a leaf; one AMD EPYC put ours at 2.1x (issue 26), hence
    4x. (torchvision's channels-last float32, once a second noise yardstick, is 10-33% from float64
    on every backbone and FPN leaf of this padded batch, even where the default is 1e-7 from it: a
    different computation, not rounding, so it is not used.)
    A bug is of another order: a BatchNorm backward without the mean term (the batch mean under
    stop_gradient) put 0.67-57 relative on the worst leaves, against allowed 0.06-0.29. So the
    bound may never exceed BUG_SCALE (0.5): a reference noisier than that fails as unusable.
    """
    frozen = parity_frozen_mask(parity["model"], parity["params"])
    if parity["architecture"] == "v1":
        errors = relative_errors(parity["our_grads"], parity["torch_grads"], frozen)
        allowed = dict.fromkeys(errors, 2e-3)
    else:
        reference = parity["float64_grads"]
        errors = relative_errors(parity["our_grads"], reference, frozen)
        noise = relative_errors(parity["torch_grads"], reference, frozen)
        allowed = {leaf: max(1e-3, NOISE_FACTOR * noise[leaf]) for leaf in errors}
        for leaf in sorted(errors, key=lambda n: errors[n] / allowed[n])[-5:]:
            print(f"v2 {leaf}: ours {errors[leaf]:.2e} from float64; torchvision float32 {noise[leaf]:.2e}; "
                  f"allowed {allowed[leaf]:.2e}")
        assert max(allowed.values()) <= BUG_SCALE, max(allowed.items(), key=lambda item: item[1])
    assert len(errors) == parity["num_trainable"]  # the same parameters are frozen in both
    worst = max(errors, key=lambda n: errors[n] / allowed[n])
    print(f"{parity['architecture']} worst leaf {worst}: {errors[worst]:.2e}, allowed {allowed[worst]:.2e} "
          f"(margin {allowed[worst] / errors[worst]:.1f}x)")
    assert errors[worst] <= allowed[worst], (worst, errors[worst], allowed[worst])


def test_parity_batch_norm_running_statistics_equal_torchvision_after_the_step(parity):
    """v2 (BatchNorm in train mode): the running statistics we report equal torchvision's buffers
    after its training forward, every BatchNorm layer of the backbone, FPN and heads; v1 has none."""
    ours = flatten_dict(parity["aux"]["norm_statistics"])
    if parity["architecture"] == "v1":
        assert ours == {}
        return
    theirs = flatten_dict(parity["torch_params_after_step"])
    before = flatten_dict(parity["params"])
    assert len(ours) == sum(path[-1] in ("mean", "var") for path in before) > 100
    for path, value in ours.items():
        assert not np.allclose(value, before[path]), path  # the statistics moved
        np.testing.assert_allclose(value, theirs[path], rtol=1e-4, atol=1e-5, err_msg=str(path))


# torchvision's own recipes (references/detection: train.py's defaults and README.md's commands), never read
# from our configs, so that our recipe drifting from torchvision's fails: SGD's base rate, momentum and
# weight decay on every trainable parameter (no --norm-weight-decay); train_one_epoch's warm-up in epoch 0,
# LinearLR from 1/1000 over min(1000, iterations - 1) iterations (thousands of iterations in a COCO epoch).
TORCHVISION_RECIPES = {"v1": dict(lr=0.02, momentum=0.9, weight_decay=1e-4),  # maskrcnn_resnet50_fpn
                       "v2": dict(lr=0.1, momentum=0.9, weight_decay=4e-5)}  # maskrcnn_resnet50_fpn_v2, PR 5773
TORCHVISION_WARMUP_FACTOR, TORCHVISION_WARMUP_ITERS = 1.0 / 1000, 1000
# Steps: the first reuses the fixture's pass; each later one costs a pass of ours and a torchvision
# step (25-50 s on the idle 2-core machine). v2 takes one: its trajectory is chaotic in float32 from
# the second step. Measured against torchvision in float64 on the same samples and targets (a one-off
# script, AMD EPYC, 2026-12-06; the relative error below): torchvision's own float32 run is 1.7e-1
# from its float64 run after step 2 and 5.7e-1 after step 3 (stem and layer1 BatchNorm biases and
# kernels), ours 2.0e-1 and 6.1e-1; after step 1, 9.7e-3 and 1.5e-2. Beyond one step a comparison
# with torchvision's trajectory measures float32 rounding grown by BatchNorm, not our code; each
# later step would have to restart torchvision from our parameters (issue 20, left open).
NUM_STEPS = {"v1": 3, "v2": 1}
# Per trainable leaf after each step: |ours - torchvision's| less the float32 rounding of both sides (one
# spacing of the leaf per step), relative to torchvision's update so far. The recipes' own warm-up rates
# (no scaling) already move this random model far (v1: gradient norm 3.7e3, its loss falls 134 -> 47 -> 17
# at 2e-5, 4e-5), so v1's gradient parity (1e-3 per leaf) grows step by step; v2's float32 gradients are
# up to 2.1e-2 (ours) and 1.6e-2 / 7.4e-2 (torchvision's two formulations) from float64 (gradient test).
UPDATE_TOLERANCE = {"v1": 1e-2, "v2": 1e-1}


def replay_loss_fn(params, recorded, key):
    """A `training.step` loss function whose value and gradients are recorded ones: recorded["loss"]
    (scalar), recorded["grads"] (a tree like params; the gradient of `recorded["grads"] . (p - p)` is
    exactly them) and, when non-empty, recorded["statistics"] as its norm statistics. It drives
    `train_step_fn` itself (learning rate of the step, frozen mask, update, statistics write-back) with
    the gradients of the parity fixture's compiled `losses_and_grads`, so that no train step is compiled."""
    del key
    offset = sum(jnp.vdot(g, p - jax.lax.stop_gradient(p))
                 for g, p in zip(jax.tree.leaves(recorded["grads"]), jax.tree.leaves(params)))
    metrics = {NORM_STATISTICS: recorded["statistics"]} if recorded["statistics"] else {}
    return recorded["loss"] + offset, metrics


def torch_frozen_leaves(torch_model, params) -> dict:
    """{path: True} for our leaves that hold no torch parameter with requires_grad (FrozenBatchNorm's
    buffers, the frozen stages, BatchNorm's running statistics)."""
    trainable = {name for name, parameter in torch_model.named_parameters() if parameter.requires_grad}
    indicators = {name: np.full(value.shape, float(name in trainable), np.float32)
                  for name, value in torch_model.state_dict().items()}
    return {path: not np.any(leaf) for path, leaf in flatten_dict(convert_state_dict(indicators, params)).items()}


def torchvision_sgd(parameters, recipe):
    """torch.optim.SGD with torchvision's recipe and its epoch-0 LinearLR warm-up: (optimizer, scheduler)."""
    sgd = torch.optim.SGD(parameters, lr=recipe["lr"], momentum=recipe["momentum"], weight_decay=recipe["weight_decay"])
    return sgd, torch.optim.lr_scheduler.LinearLR(sgd, start_factor=TORCHVISION_WARMUP_FACTOR,
                                                  total_iters=TORCHVISION_WARMUP_ITERS)


def momentum_traces(opt_state) -> dict:
    """{path: leaf} of the momentum trace in our optimizer state (trainable leaves only)."""
    trace = optax.tree_utils.tree_get(opt_state, "trace")
    return {tuple(key.key for key in path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(trace)}


def test_parity_training_steps_equal_torchvision_sgd_with_warmup(parity):
    """Real training steps on the fixture's batch (3 for v1, 1 for v2): ours, `training.step.train_step_fn`
    with the optimizer and learning-rate schedule that `training.setup` builds from our COCO config
    (SGD with momentum and weight decay, warm-up from step 0, the config's frozen stages via
    `models.frozen_parameter_mask`, v2's running statistics written back), against torchvision's model
    with torch.optim.SGD and its LinearLR warm-up at torchvision's own recipe, each step on the same
    samples (our proposals and sampled indices of that step, as the fixture gives them). Our
    gradients come from the fixture's compiled `losses_and_grads` (no new compile); step 1 reuses the
    fixture's pass (torchvision's mask targets on both sides), the later steps train on our own mask
    targets, given to torchvision too (`torchvision_given_mask_targets`): one pass of ours per step.

    After every step: the learning rates equal; every leaf torchvision does not train (frozen stages,
    FrozenBatchNorm) is bit-identical to its initial value on both sides; every trainable leaf within
    UPDATE_TOLERANCE of torchvision's, relative to torchvision's update so far; v2's running
    statistics within the one-step statistics test's tolerance. And exactly: torch.optim.SGD (same
    recipe, float64) applied to our parameters with our gradients gives our parameters (within float32
    rounding) and our momentum traces (within 1e-5): weight decay on each leaf, v2's norm scale and
    bias included, is far below the parity noise of the model's gradients, but not of this.
    """
    architecture, model, spec, examples = parity["architecture"], parity["model"], parity["spec"], parity["examples"]
    params = parity["params"]
    config = load_config_file(CONFIGS / OUR_RECIPES[architecture])
    frozen_mask = frozen_parameter_mask(params, config.train.trainable_backbone_layers, norm=model.norm)
    optimizer, learning_rate_fn = optimizer_from_config(config.train, frozen_mask)
    train_step = jax.jit(train_step_fn(replay_loss_fn, optimizer, learning_rate_fn, frozen_mask))
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params),
                       key=jax.random.key_data(jax.random.key(0)))

    # torchvision's side continues from the fixture's model after its training step (its gradients,
    # and v2's running statistics moved once), on a copy.
    torch_model = copy.deepcopy(parity["torch_model"])
    for copied, original in zip(torch_model.parameters(), parity["torch_model"].parameters()):
        copied.grad = None if original.grad is None else original.grad.clone()
    recipe = TORCHVISION_RECIPES[architecture]
    sgd, warmup = torchvision_sgd([p for p in torch_model.parameters() if p.requires_grad], recipe)
    torch_frozen = torch_frozen_leaves(torch_model, params)
    statistics = {path for path in torch_frozen if model.norm == "batch" and path[-1] in ("mean", "var")}
    initial = {path: np.asarray(leaf) for path, leaf in flatten_dict(params).items()}
    assert sum(not frozen for frozen in torch_frozen.values()) == parity["num_trainable"]
    # The exact reference: torch.optim.SGD in float64 on our own parameters and gradients.
    mirror = {path: torch.nn.Parameter(torch.from_numpy(initial[path].astype(np.float64)))
              for path, frozen in torch_frozen.items() if not frozen}
    mirror_sgd, mirror_warmup = torchvision_sgd(list(mirror.values()), recipe)

    loss, aux, grads = parity["our_loss"], parity["aux"], parity["our_grads"]
    for step in range(NUM_STEPS[architecture]):
        if step > 0:
            (loss, (_, aux)), grads = parity["losses_and_grads"](state.params, no_mask_targets(examples, spec), True)
            samples, proposals, _ = torchvision_samples(aux)
            sgd.zero_grad()
            with torchvision_given_mask_targets(aux):
                torch_training_step(torch_model, examples, samples, params, proposals)
        their_learning_rate = sgd.param_groups[0]["lr"]
        state, metrics = train_step(state, {"loss": loss, "grads": grads, "statistics": aux[NORM_STATISTICS]})
        sgd.step()
        warmup.step()
        flat_grads = flatten_dict(grads)
        for path, parameter in mirror.items():
            parameter.grad = torch.from_numpy(np.asarray(flat_grads[path], np.float64))
        mirror_sgd.step()
        mirror_warmup.step()

        ours = {path: np.asarray(leaf) for path, leaf in flatten_dict(state.params).items()}
        theirs = flatten_dict(convert_state_dict({k: v.detach().numpy() for k, v in torch_model.state_dict().items()},
                                                 params))
        traces = momentum_traces(state.opt_state)
        errors, moved = {}, 0
        for path, frozen in torch_frozen.items():
            our_leaf, their_leaf = ours[path].astype(np.float64), np.asarray(theirs[path], np.float64)
            if path in statistics:
                assert not np.array_equal(our_leaf, initial[path]), path
                np.testing.assert_allclose(our_leaf, their_leaf, rtol=1e-4, atol=1e-5, err_msg=f"step {step} {path}")
            elif frozen:
                assert np.array_equal(ours[path], initial[path]), (step, path, "frozen leaf moved in ours")
                assert np.array_equal(theirs[path], initial[path]), (step, path, "frozen leaf moved in torchvision")
            else:
                # Each side rounds its parameters to the float32 grid at every step: up to one spacing
                # per element and step apart before any difference in the updates. Small rates times
                # small gradients move a leaf by about that (v2's norm scales near 1 at the rate 1e-4).
                update = np.linalg.norm(their_leaf - initial[path])
                spacing = np.linalg.norm(np.spacing(initial[path]).astype(np.float64))
                rounding = (step + 1) * spacing
                errors[path] = max(0.0, np.linalg.norm(our_leaf - their_leaf) - rounding) / max(update, spacing)
                moved += update > spacing
                exact = mirror[path].detach().numpy()
                np.testing.assert_allclose(our_leaf, exact, rtol=1e-6, atol=1e-6 * np.abs(exact).max(),
                                           err_msg=f"step {step} {path}: ours vs torch.optim.SGD on our gradients")
                buffer = mirror_sgd.state[mirror[path]]["momentum_buffer"].numpy()
                trace_error = np.linalg.norm(np.asarray(traces[path], np.float64) - buffer) / np.linalg.norm(buffer)
                assert trace_error <= 1e-5, (step, path, "momentum", trace_error)
        assert set(traces) == set(mirror), "our optimizer keeps momentum for other leaves than torchvision trains"
        worst = sorted(errors, key=errors.get)[-3:]
        print(f"{architecture} step {step}: learning rate {float(metrics['learning_rate']):.6g} vs {their_learning_rate:.6g}, "
              f"loss {float(loss):.4f}, gradient norm {float(metrics['grad_norm']):.3g}, {moved} of {len(errors)} "
              f"trainable leaves moved by more than their float32 spacing, worst leaves "
              + ", ".join(f"{'/'.join(p)} {errors[p]:.2e}" for p in worst))
        assert errors[worst[-1]] <= UPDATE_TOLERANCE[architecture], (step, worst[-1], errors[worst[-1]])
        assert int(metrics["skipped"]) == 0
        np.testing.assert_allclose(float(metrics["learning_rate"]), their_learning_rate, rtol=1e-6)
    assert parity["losses_and_grads"]._cache_size() == 1  # every pass on the fixture's one compile
