"""match_boxes against torchvision's Matcher (RPN 0.7/0.3 with low-quality matches, RoI heads 0.5/0.5
without), and the box targets of the matched GT against torchvision's BoxCoder."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
from torchvision.models.detection._utils import BoxCoder, Matcher  # noqa: E402
from torchvision.models.detection.roi_heads import RoIHeads  # noqa: E402
from torchvision.models.detection.rpn import RegionProposalNetwork  # noqa: E402

from maskrcnn_jax.ops import box_iou, encode_boxes, match_boxes  # noqa: E402

RPN = (0.7, 0.3, True)
ROI_HEADS = (0.5, 0.5, False)
CONFIGS = pytest.mark.parametrize("config", [RPN, ROI_HEADS], ids=["rpn", "roi_heads"])
IMAGE = 100.0
jitted_box_iou = jax.jit(box_iou)
jitted_encode = jax.jit(encode_boxes, static_argnums=2)


@functools.cache
def jitted_match(foreground_threshold, background_threshold, allow_low_quality_matches):
    return jax.jit(functools.partial(
        match_boxes, foreground_threshold=foreground_threshold, background_threshold=background_threshold,
        allow_low_quality_matches=allow_low_quality_matches))


def ours(iou, gt_valid, config):
    matched_gt, labels = jitted_match(*config)(jnp.asarray(iou), jnp.asarray(gt_valid))
    return np.asarray(matched_gt), np.asarray(labels)


def torchvision_reference(iou, gt_valid, config):
    """torchvision's labels [N] and matched GT [N] (padded-row index where foreground, else -1).

    torchvision sees only the valid GT rows, in order. Rows whose highest IoU is 0 are left out too:
    that is match_boxes' one documented difference (such a GT adds no low-quality matches), and it
    changes nothing else, since such a row is no candidate's unique best and candidates with IoU 0
    everywhere are background either way. test_zero_iou_gt_* shows the difference itself.
    """
    rows = np.flatnonzero(gt_valid & (iou.max(axis=1, initial=-1.0) > 0))
    if len(rows) == 0:  # torchvision's empty-GT branch: everything background
        return np.zeros(iou.shape[1], np.int32), np.full(iou.shape[1], -1)
    matches = Matcher(*config)(torch.from_numpy(iou[rows])).numpy()
    labels = np.where(matches >= 0, 1, np.where(matches == Matcher.BELOW_LOW_THRESHOLD, 0, -1))
    return labels.astype(np.int32), np.where(matches >= 0, rows[np.maximum(matches, 0)], -1)


def assert_matches_torchvision(iou, gt_valid, config):
    matched_gt, labels = ours(iou, gt_valid, config)
    expected_labels, expected_matches = torchvision_reference(iou, gt_valid, config)
    np.testing.assert_array_equal(labels, expected_labels)
    foreground = expected_labels == 1
    np.testing.assert_array_equal(matched_gt[foreground], expected_matches[foreground])
    valid_rows = np.flatnonzero(gt_valid)
    if len(valid_rows):  # everywhere: the best valid GT, ties to the lower index as torch.max
        best = torch.from_numpy(iou[valid_rows]).max(dim=0).indices.numpy()
        np.testing.assert_array_equal(matched_gt, valid_rows[best])
    return labels


def random_boxes(rng, count, min_side=2.0, max_side=40.0):
    top_left = rng.uniform(-10, IMAGE, size=(count, 2))
    sides = rng.uniform(min_side, max_side, size=(count, 2))
    return np.concatenate([top_left, top_left + sides], axis=1).astype(np.float32)


def grid_boxes(rng, count):
    """Boxes with integer corners on a coarse grid: many exactly equal IoUs (ties)."""
    top_left = rng.integers(0, 8, size=(count, 2)) * 4
    sides = rng.integers(1, 5, size=(count, 2)) * 4
    return np.concatenate([top_left, top_left + sides], axis=1).astype(np.float32)


def iou_matrix(gt_boxes, candidates):
    return np.array(jitted_box_iou(gt_boxes, candidates))  # a writable copy for torch


def box_targets(gt_boxes, matched_gt, references, weights):
    """encode_boxes of each candidate's matched GT, for all candidates (one fixed shape)."""
    return np.asarray(jitted_encode(jnp.asarray(gt_boxes)[matched_gt], references, weights))


@CONFIGS
def test_random_boxes_with_padding_match_torchvision(config):
    rng = np.random.default_rng(0)
    foreground_count = 0
    for _ in range(20):
        gt_boxes = random_boxes(rng, 8)
        candidates = random_boxes(rng, 300)
        gt_valid = rng.uniform(size=8) < 0.7  # padding rows anywhere, with real-looking boxes in them
        labels = assert_matches_torchvision(iou_matrix(gt_boxes, candidates), gt_valid, config)
        foreground_count += (labels == 1).sum()
    assert foreground_count > 50  # the comparison covered foreground, not only background


@CONFIGS
def test_grid_boxes_with_ties_match_torchvision(config):
    rng = np.random.default_rng(1)
    shared_best = 0
    for _ in range(20):
        gt_boxes = grid_boxes(rng, 8)
        gt_boxes[5] = gt_boxes[2]  # duplicate GT: every argmax tie between them goes to row 2
        candidates = grid_boxes(rng, 200)
        iou = iou_matrix(gt_boxes, candidates)
        shared_best += (iou == iou.max(axis=1, keepdims=True)).sum() - len(iou)
        assert_matches_torchvision(iou, np.ones(8, bool), config)
    assert shared_best > 20  # many GT shared their best IoU between several candidates


def degenerate_cases():
    rng = np.random.default_rng(2)
    candidates = np.concatenate([random_boxes(rng, 120), grid_boxes(rng, 40)])
    candidates[-5:] = candidates[-6]  # duplicate candidates: all tie for whatever they overlap best
    one = np.zeros((4, 4), np.float32)
    one[0] = [20, 20, 50, 60]
    duplicates = np.array([[10, 10, 40, 40], [10, 10, 40, 40], [30, 5, 80, 45], [30, 5, 80, 45]], np.float32)
    outside = np.array([[-30, -30, 5, 5], [90, 80, 140, 130], [-60, -60, -20, -20], [20, 20, 50, 60]], np.float32)
    return {
        "none": (candidates, np.zeros((4, 4), np.float32), np.zeros(4, bool)),
        "one": (candidates, one, np.array([True, False, False, False])),
        "duplicates": (candidates, duplicates, np.ones(4, bool)),
        "duplicate_candidates": (candidates, candidates[[-1, 3, 50, 7]], np.ones(4, bool)),
        "outside_image": (candidates, outside, np.ones(4, bool)),
        "padding_first": (candidates, duplicates[[2, 0, 1, 3]], np.array([False, True, False, True])),
    }


@CONFIGS
@pytest.mark.parametrize("case", list(degenerate_cases()))
def test_degenerate_gt_match_torchvision(case, config):
    candidates, gt_boxes, gt_valid = degenerate_cases()[case]
    iou = iou_matrix(gt_boxes, candidates)
    labels = assert_matches_torchvision(iou, gt_valid, config)
    if case == "none":
        assert (labels == 0).all()


def test_padding_rows_never_match_even_with_iou_one():
    candidates = np.array([[0, 0, 10, 10], [50, 50, 60, 60]], np.float32)
    gt_boxes = np.array([[0, 0, 10, 10], [50, 50, 61, 60]], np.float32)
    matched_gt, labels = ours(iou_matrix(gt_boxes, candidates), np.array([False, True]), RPN)
    np.testing.assert_array_equal(matched_gt, [1, 1])
    np.testing.assert_array_equal(labels, [0, 1])  # candidate 0 overlaps only the padding row


def test_argmax_ties_go_to_lower_index_as_torch_max():
    iou = np.array([[0.6, 0.2, 0.1], [0.6, 0.8, 0.1], [0.1, 0.8, 0.1]], np.float32)
    expected = torch.from_numpy(iou).max(dim=0).indices.numpy()
    np.testing.assert_array_equal(expected, [0, 1, 0])  # torch's CPU convention: first index
    matched_gt, _ = ours(iou, np.ones(3, bool), ROI_HEADS)
    np.testing.assert_array_equal(matched_gt, expected)


def test_low_quality_matches_keep_every_tie_with_its_own_best_gt():
    # GT 0's best IoU 0.4 is shared by candidates 0 and 2; candidate 2 prefers GT 1 (0.45).
    iou = np.array([[0.4, 0.1, 0.4, 0.0], [0.0, 0.2, 0.45, 0.1]], np.float32)
    matched_gt, labels = ours(iou, np.ones(2, bool), RPN)
    np.testing.assert_array_equal(labels, [1, 0, 1, 0])
    np.testing.assert_array_equal(matched_gt[[0, 2]], [0, 1])
    assert_matches_torchvision(iou, np.ones(2, bool), RPN)


def test_zero_iou_gt_adds_no_low_quality_matches_unlike_torchvision():
    """The one deliberate difference: a GT overlapping nothing (here wholly outside the image)."""
    candidates = np.array([[0, 0, 10, 10], [20, 20, 40, 40], [60, 60, 70, 70]], np.float32)
    gt_boxes = np.array([[22, 22, 38, 44], [-50, -50, -30, -30]], np.float32)
    iou = iou_matrix(gt_boxes, candidates)
    assert iou[1].max() == 0
    _, labels = ours(iou, np.ones(2, bool), RPN)
    np.testing.assert_array_equal(labels, [0, 1, 0])
    torchvision_matches = Matcher(*RPN)(torch.from_numpy(iou)).numpy()
    np.testing.assert_array_equal(torchvision_matches, [0, 0, 0])  # torchvision: every zero-IoU candidate positive


def test_rpn_labels_and_box_targets_equal_torchvision_assign_targets():
    """torchvision's own RPN target assignment (its box_iou, Matcher and BoxCoder) on random boxes."""
    rng = np.random.default_rng(3)
    rpn = RegionProposalNetwork(None, None, 0.7, 0.3, 256, 0.5, {}, {}, 0.7)
    for _ in range(10):
        anchors = random_boxes(rng, 400, min_side=4.0)
        gt_boxes = random_boxes(rng, 6)
        gt_valid = np.arange(6) < rng.integers(1, 7)
        (expected_labels,), (matched_gt_boxes,) = rpn.assign_targets_to_anchors(
            [torch.from_numpy(anchors)], [{"boxes": torch.from_numpy(gt_boxes[gt_valid])}])
        iou = iou_matrix(gt_boxes, anchors)
        matched_gt, labels = ours(iou, gt_valid, RPN)
        np.testing.assert_array_equal(labels, expected_labels.numpy().astype(np.int32))
        positive = labels == 1
        expected_targets = rpn.box_coder.encode([matched_gt_boxes[positive]], [torch.from_numpy(anchors[positive])])[0]
        targets = box_targets(gt_boxes, matched_gt, anchors, (1.0, 1.0, 1.0, 1.0))[positive]
        np.testing.assert_allclose(targets, expected_targets.numpy(), rtol=1e-6, atol=1e-7)  # float32 rounding


def test_roi_heads_labels_and_box_targets_equal_torchvision_assign_targets():
    rng = np.random.default_rng(4)
    roi_heads = RoIHeads(None, None, None, 0.5, 0.5, 512, 0.25, (10.0, 10.0, 5.0, 5.0), 0.05, 0.5, 100)
    for _ in range(10):
        gt_boxes = random_boxes(rng, 6)
        gt_classes = rng.integers(1, 91, size=6)
        proposals = np.concatenate([random_boxes(rng, 300), gt_boxes])  # GT appended, as torchvision does
        (expected_matches,), (expected_classes,) = roi_heads.assign_targets_to_proposals(
            [torch.from_numpy(proposals)], [torch.from_numpy(gt_boxes)], [torch.from_numpy(gt_classes)])
        matched_gt, labels = ours(iou_matrix(gt_boxes, proposals), np.ones(6, bool), ROI_HEADS)
        classes = np.where(labels == 1, gt_classes[matched_gt], labels)
        np.testing.assert_array_equal(classes, expected_classes.numpy())
        positive = labels == 1
        np.testing.assert_array_equal(matched_gt[positive], expected_matches.numpy()[positive])
        expected_targets = BoxCoder((10.0, 10.0, 5.0, 5.0)).encode_single(
            torch.from_numpy(gt_boxes[expected_matches.numpy()[positive]]), torch.from_numpy(proposals[positive]))
        targets = box_targets(gt_boxes, matched_gt, proposals, (10.0, 10.0, 5.0, 5.0))[positive]
        np.testing.assert_allclose(targets, expected_targets.numpy(), rtol=1e-6, atol=1e-7)  # float32 rounding


def test_no_gt_gives_background_in_torchvision_and_ours():
    rng = np.random.default_rng(5)
    anchors = random_boxes(rng, 50)
    rpn = RegionProposalNetwork(None, None, 0.7, 0.3, 256, 0.5, {}, {}, 0.7)
    (expected,), _ = rpn.assign_targets_to_anchors([torch.from_numpy(anchors)], [{"boxes": torch.zeros(0, 4)}])
    _, labels = ours(iou_matrix(random_boxes(rng, 3), anchors), np.zeros(3, bool), RPN)
    np.testing.assert_array_equal(labels, expected.numpy().astype(np.int32))


def test_match_boxes_compiles_once_per_shape_and_vmaps():
    @jax.jit
    @chex.assert_max_traces(n=1)
    def batched(iou, gt_valid):
        return jax.vmap(lambda i, v: match_boxes(i, v, 0.7, 0.3, True))(iou, gt_valid)

    rng = np.random.default_rng(6)
    for _ in range(3):
        iou = np.stack([iou_matrix(random_boxes(rng, 5), random_boxes(rng, 60)) for _ in range(2)])
        gt_valid = rng.uniform(size=(2, 5)) < 0.8
        matched_gt, labels = batched(iou, gt_valid)
        for image in range(2):
            single_gt, single_labels = ours(iou[image], gt_valid[image], RPN)
            np.testing.assert_array_equal(np.asarray(matched_gt[image]), single_gt)
            np.testing.assert_array_equal(np.asarray(labels[image]), single_labels)
