"""sample_balanced: torchvision's BalancedPositiveNegativeSampler counts, uniform sampling without
replacement, fixed shapes."""

import functools
import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler  # noqa: E402

from maskrcnn_jax.ops import sample_balanced  # noqa: E402

P_THRESHOLD = 1e-3  # fixed keys, so the outcome is deterministic; a fair sampler passes with p far above


@functools.cache
def jitted_sample(num_samples, positive_fraction):
    return jax.jit(functools.partial(sample_balanced, num_samples=num_samples, positive_fraction=positive_fraction))


def sample(key, labels, num_samples, positive_fraction):
    indices, is_positive, valid = jitted_sample(num_samples, positive_fraction)(key, jnp.asarray(labels, jnp.int32))
    return np.asarray(indices), np.asarray(is_positive), np.asarray(valid)


def label_configurations():
    """(name, labels [N], S, positive_fraction): torchvision's two samplers and the edge cases."""
    rng = np.random.default_rng(0)

    def mix(count, positives, negatives):
        labels = np.full(count, -1, np.int32)
        chosen = rng.permutation(count)[:positives + negatives]
        labels[chosen[:positives]] = 1
        labels[chosen[positives:]] = 0
        return labels

    return [
        ("rpn_typical", mix(3000, 40, 2500), 256, 0.5),
        ("rpn_many_positives", mix(3000, 700, 2000), 256, 0.5),
        ("roi_typical", mix(2000, 60, 1900), 512, 0.25),
        ("roi_many_positives", mix(2000, 400, 1500), 512, 0.25),
        ("no_positives", mix(1000, 0, 900), 256, 0.5),
        ("few_negatives", mix(1000, 300, 20), 256, 0.5),
        ("only_ignored", mix(300, 0, 0), 64, 0.25),
        ("fewer_candidates_than_samples", mix(40, 7, 20), 64, 0.25),
        ("all_positive_fewer_than_samples", np.ones(10, np.int32), 16, 0.5),
        ("fraction_rounds_down", mix(500, 100, 300), 10, 0.33),
    ]


CONFIGURATIONS = pytest.mark.parametrize(
    "labels, num_samples, positive_fraction", [case[1:] for case in label_configurations()],
    ids=[case[0] for case in label_configurations()])


@CONFIGURATIONS
def test_counts_equal_torchvision(labels, num_samples, positive_fraction):
    (positive_mask,), (negative_mask,) = BalancedPositiveNegativeSampler(num_samples, positive_fraction)(
        [torch.from_numpy(labels)])
    for seed in range(3):
        _, is_positive, valid = sample(jax.random.key(seed), labels, num_samples, positive_fraction)
        assert (is_positive & valid).sum() == positive_mask.sum().item()
        assert (~is_positive & valid).sum() == negative_mask.sum().item()


@CONFIGURATIONS
def test_samples_are_distinct_labelled_candidates_positives_first(labels, num_samples, positive_fraction):
    indices, is_positive, valid = sample(jax.random.key(1), labels, num_samples, positive_fraction)
    assert indices.shape == is_positive.shape == valid.shape == (num_samples,)
    count = valid.sum()
    np.testing.assert_array_equal(valid, np.arange(num_samples) < count)  # valid slots first
    np.testing.assert_array_equal(is_positive[:count], np.arange(count) < (is_positive & valid).sum())
    assert not is_positive[~valid].any()
    assert (indices[~valid] == 0).all()
    assert len(np.unique(indices[valid])) == count
    assert (labels[indices[valid & is_positive]] == 1).all()
    assert (labels[indices[valid & ~is_positive]] == 0).all()


def many_draws(labels, num_samples, positive_fraction, draws):
    keys = jax.random.split(jax.random.key(42), draws)
    run = jax.jit(jax.vmap(lambda key: sample_balanced(key, jnp.asarray(labels), num_samples, positive_fraction)))
    return (np.asarray(array) for array in run(keys))


def test_every_candidate_equally_likely():
    """Chi-square tests over 6000 keys: inclusion counts per negative, and how often each 3-subset
    of the 9 positives is drawn (uniform without replacement makes all 84 subsets equally likely)."""
    labels = np.array([1] * 9 + [0] * 30 + [-1] * 11, np.int32)[np.random.default_rng(1).permutation(50)]
    draws = 6000
    indices, is_positive, valid = many_draws(labels, 12, 0.25, draws)  # 3 positives, 9 negatives a draw
    assert (valid.sum(1) == 12).all() and (is_positive.sum(1) == 3).all()

    negatives = np.flatnonzero(labels == 0)
    negative_counts = np.array([(indices[:, 3:] == candidate).sum() for candidate in negatives])
    assert negative_counts.sum() == draws * 9
    assert stats.chisquare(negative_counts).pvalue > P_THRESHOLD

    positives = np.flatnonzero(labels == 1)
    subsets = {subset: 0 for subset in itertools.combinations(positives, 3)}
    for row in indices[:, :3]:
        subsets[tuple(sorted(row))] += 1
    assert stats.chisquare(list(subsets.values())).pvalue > P_THRESHOLD


def test_different_keys_draw_different_samples():
    labels = np.array([1] * 20 + [0] * 100, np.int32)
    first, _, _ = sample(jax.random.key(0), labels, 32, 0.25)
    second, _, _ = sample(jax.random.key(1), labels, 32, 0.25)
    again, _, _ = sample(jax.random.key(0), labels, 32, 0.25)
    np.testing.assert_array_equal(first, again)
    assert set(first) != set(second)


def test_sample_balanced_compiles_once_per_shape():
    @jax.jit
    @chex.assert_max_traces(n=1)
    def batched(keys, labels):
        return jax.vmap(lambda key, image_labels: sample_balanced(key, image_labels, 64, 0.25))(keys, labels)

    rng = np.random.default_rng(3)
    for seed in range(3):
        labels = rng.integers(-1, 2, size=(2, 500)).astype(np.int32)
        indices, is_positive, valid = batched(jax.random.split(jax.random.key(seed), 2), labels)
        assert indices.shape == (2, 64)
        for image in range(2):
            chosen = np.asarray(indices[image])[np.asarray(valid[image])]
            expected = np.where(np.asarray(is_positive[image])[np.asarray(valid[image])], 1, 0)
            np.testing.assert_array_equal(labels[image][chosen], expected)
