"""nms / batched_nms against torchvision.ops on random overlapping boxes, padding and ties.

Most cases are padded into one fixed candidate count so a single compiled function serves them.
"""

import functools

import chex
import jax
import numpy as np
import pytest
import torch
import torchvision

from maskrcnn_jax.ops import batched_nms, box_iou, nms

CAPACITY = 384  # candidates per call after padding
MAX_OUTPUT = 384


@functools.cache
def jitted_nms(iou_threshold, max_output=MAX_OUTPUT):
    return jax.jit(functools.partial(nms, iou_threshold=iou_threshold, max_output=max_output))


@functools.cache
def jitted_batched_nms(iou_threshold, max_output=MAX_OUTPUT):
    return jax.jit(functools.partial(batched_nms, iou_threshold=iou_threshold, max_output=max_output))


def clustered_boxes(rng, count, objects=20, extent=300.0):
    """Boxes jittered around a few objects so that many overlap, like detector candidates."""
    centres = rng.uniform(0, extent, size=(objects, 2))
    sizes = rng.uniform(8, 120, size=(objects, 2))
    which = rng.integers(0, objects, size=count)
    centre = centres[which] + rng.normal(scale=0.15, size=(count, 2)) * sizes[which]
    size = sizes[which] * np.exp(rng.normal(scale=0.2, size=(count, 2)))
    return np.concatenate([centre - size / 2, centre + size / 2], axis=1).astype(np.float32)


def pad(boxes, scores, *extra, capacity=CAPACITY):
    """Place the candidates at random slots of a padded array; returns padded arrays + slot map."""
    rng = np.random.default_rng(len(boxes))
    slots = np.sort(rng.choice(capacity, size=len(boxes), replace=False))
    padded_boxes = np.zeros((capacity, 4), np.float32)
    padded_boxes[:] = [5.0, 5.0, 50.0, 50.0]  # garbage that would suppress things if it were used
    padded_boxes[slots] = boxes
    padded_scores = np.full(capacity, 2.0, np.float32)  # higher than any real score
    padded_scores[slots] = scores
    valid = np.zeros(capacity, bool)
    valid[slots] = True
    padded_extra = []
    for values in extra:
        padded = np.zeros(capacity, values.dtype)
        padded[slots] = values
        padded_extra.append(padded)
    return (padded_boxes, padded_scores, *padded_extra, valid, slots)


def kept_list(indices, valid):
    indices, valid = np.asarray(indices), np.asarray(valid)
    assert indices.dtype == np.int32
    # valid slots first, padding after with index 0
    count = int(valid.sum())
    assert valid[:count].all() and not valid[count:].any()
    assert (indices[count:] == 0).all()
    return indices[:count]


def greedy_reference(boxes, scores, classes, iou_threshold):
    """Plain numpy greedy NMS visiting boxes by descending score, lower index first on ties."""
    order = np.lexsort((np.arange(len(scores)), -scores))
    iou = np.asarray(box_iou(boxes, boxes))
    suppressed = np.zeros(len(boxes), bool)
    kept = []
    for i in order:
        if suppressed[i]:
            continue
        kept.append(i)
        suppressed |= (iou[i] > iou_threshold) & (classes == classes[i])
    return np.array(kept, dtype=np.int64)


@pytest.mark.parametrize("count", [1, 7, 150, 384])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("iou_threshold", [0.5, 0.7])
def test_nms_matches_torchvision(count, seed, iou_threshold):
    rng = np.random.default_rng(seed)
    boxes = clustered_boxes(rng, count)
    scores = rng.permutation(count).astype(np.float32) / count  # distinct scores: no ties
    expected = torchvision.ops.nms(torch.from_numpy(boxes), torch.from_numpy(scores), iou_threshold).numpy()
    if count < CAPACITY:
        padded_boxes, padded_scores, valid, slots = pad(boxes, scores)
        actual = kept_list(*jitted_nms(iou_threshold)(padded_boxes, padded_scores, valid))
        np.testing.assert_array_equal(actual, slots[expected])
    else:
        actual = kept_list(*jitted_nms(iou_threshold)(boxes, scores, np.ones(count, bool)))
        np.testing.assert_array_equal(actual, expected)


def test_nms_degenerate_boxes_match_torchvision():
    boxes = np.array(
        [
            [10, 10, 10, 10],  # zero area: IoU 0/0 never suppresses (torchvision: NaN > t is False)
            [10, 10, 10, 10],
            [0, 0, 20, 20],
            [0, 0, 20, 20.5],
            [-30, -30, -5, -5],  # outside the image
            [-30, -30, -5, -6],
            [0, 0, 1e-4, 1e-4],
        ],
        dtype=np.float32,
    )
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3], np.float32)
    expected = torchvision.ops.nms(torch.from_numpy(boxes), torch.from_numpy(scores), 0.5).numpy()
    padded_boxes, padded_scores, valid, slots = pad(boxes, scores)
    np.testing.assert_array_equal(kept_list(*jitted_nms(0.5)(padded_boxes, padded_scores, valid)), slots[expected])
    np.testing.assert_array_equal(expected, [0, 1, 2, 4, 6])


def test_all_invalid_keeps_nothing():
    rng = np.random.default_rng(0)
    boxes = clustered_boxes(rng, CAPACITY)
    indices, valid = jitted_nms(0.7)(boxes, rng.uniform(size=CAPACITY).astype(np.float32), np.zeros(CAPACITY, bool))
    assert not np.asarray(valid).any()
    assert (np.asarray(indices) == 0).all()


def test_max_output_truncates_torchvision_list():
    rng = np.random.default_rng(5)
    boxes = clustered_boxes(rng, CAPACITY, objects=60)
    scores = rng.uniform(size=CAPACITY).astype(np.float32)
    expected = torchvision.ops.nms(torch.from_numpy(boxes), torch.from_numpy(scores), 0.7).numpy()
    assert len(expected) > 20
    actual = kept_list(*jitted_nms(0.7, max_output=20)(boxes, scores, np.ones(CAPACITY, bool)))
    np.testing.assert_array_equal(actual, expected[:20])


@pytest.mark.parametrize("seed", [0, 1])
def test_ties_break_by_lower_index_and_form_a_valid_nms(seed):
    rng = np.random.default_rng(seed)
    count = 300
    boxes = clustered_boxes(rng, count)
    scores = rng.integers(0, 4, size=count).astype(np.float32)  # heavy ties
    classes = np.zeros(count, np.int32)
    padded_boxes, padded_scores, valid, slots = pad(boxes, scores)
    actual = kept_list(*jitted_nms(0.6)(padded_boxes, padded_scores, valid))
    kept = np.searchsorted(slots, actual)  # back to positions in `boxes`
    np.testing.assert_array_equal(kept, greedy_reference(boxes, scores, classes, 0.6))
    # A valid NMS whatever the tie order: ranks non-increasing, kept boxes mutually below the
    # threshold, and every dropped box overlaps a kept box of higher or equal score.
    assert (np.diff(scores[kept]) <= 0).all()
    iou = np.asarray(box_iou(boxes, boxes))
    kept_iou = iou[np.ix_(kept, kept)]
    assert not (kept_iou[~np.eye(len(kept), dtype=bool)] > 0.6).any()
    for dropped in np.setdiff1d(np.arange(count), kept):
        assert ((iou[dropped, kept] > 0.6) & (scores[kept] >= scores[dropped])).any()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batched_nms_matches_torchvision(seed):
    rng = np.random.default_rng(seed)
    count = 250
    boxes = clustered_boxes(rng, count, objects=10)
    scores = rng.permutation(count).astype(np.float32) / count
    classes = rng.integers(0, 5, size=count).astype(np.int32)
    expected = torchvision.ops.batched_nms(
        torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(classes).long(), 0.5
    ).numpy()
    padded_boxes, padded_scores, padded_classes, valid, slots = pad(boxes, scores, classes)
    actual = kept_list(*jitted_batched_nms(0.5)(padded_boxes, padded_scores, padded_classes, valid))
    np.testing.assert_array_equal(actual, slots[expected])
    single_class = torchvision.ops.nms(torch.from_numpy(boxes), torch.from_numpy(scores), 0.5).numpy()
    assert len(expected) > len(single_class), "classes should protect some boxes from suppression"


def test_large_candidate_count_matches_torchvision():
    rng = np.random.default_rng(11)
    count = 5000
    boxes = clustered_boxes(rng, count, objects=400, extent=1200.0)
    scores = rng.permutation(count).astype(np.float32) / count
    expected = torchvision.ops.nms(torch.from_numpy(boxes), torch.from_numpy(scores), 0.7).numpy()
    run = jax.jit(functools.partial(nms, iou_threshold=0.7, max_output=1000))
    actual = kept_list(*run(boxes, scores, np.ones(count, bool)))
    np.testing.assert_array_equal(actual, expected[:1000])


def test_vmapped_over_images_equals_per_image():
    rng = np.random.default_rng(8)
    boxes = np.stack([clustered_boxes(rng, 200) for _ in range(3)])
    scores = rng.uniform(size=(3, 200)).astype(np.float32)
    classes = rng.integers(0, 3, size=(3, 200)).astype(np.int32)
    valid = rng.uniform(size=(3, 200)) > 0.2
    valid[1] = False  # one image is all padding
    per_image_nms = jax.jit(jax.vmap(lambda b, s, v: nms(b, s, v, 0.5, 100)))
    per_image_batched = jax.jit(jax.vmap(lambda b, s, c, v: batched_nms(b, s, c, v, 0.5, 100)))
    indices, kept = per_image_nms(boxes, scores, valid)
    class_indices, class_kept = per_image_batched(boxes, scores, classes, valid)
    for image in range(3):
        slots = np.flatnonzero(valid[image])
        expected = slots[torchvision.ops.nms(torch.from_numpy(boxes[image][slots]), torch.from_numpy(scores[image][slots]), 0.5).numpy()]
        np.testing.assert_array_equal(kept_list(indices[image], kept[image]), expected[:100])
        expected = slots[
            torchvision.ops.batched_nms(
                torch.from_numpy(boxes[image][slots]),
                torch.from_numpy(scores[image][slots]),
                torch.from_numpy(classes[image][slots]).long(),
                0.5,
            ).numpy()
        ]
        np.testing.assert_array_equal(kept_list(class_indices[image], class_kept[image]), expected[:100])


def test_empty_input_keeps_nothing():
    indices, kept = nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, bool), 0.5, 5)
    assert indices.shape == (5,) and not np.asarray(kept).any()


def test_nms_compiles_once():
    @jax.jit
    @chex.assert_max_traces(n=1)
    def run(boxes, scores, valid):
        return nms(boxes, scores, valid, 0.5, 64)

    for seed in range(3):
        rng = np.random.default_rng(seed)
        boxes = clustered_boxes(rng, 200)
        scores = rng.permutation(200).astype(np.float32)
        expected = torchvision.ops.nms(torch.from_numpy(boxes), torch.from_numpy(scores), 0.5).numpy()[:64]
        np.testing.assert_array_equal(kept_list(*run(boxes, scores, np.ones(200, bool))), expected)
