"""Balanced sampling of positive and negative candidates with fixed output shapes, for one image.

Shape legend: N candidates, S samples.
"""

import jax
import jax.numpy as jnp


def _random_subset_order(scores, members, count):
    """Indices [count] of the members with the highest scores, members first (non-members fill the tail)."""
    return jax.lax.top_k(jnp.where(members, scores, -1), count)[1].astype(jnp.int32)


def sample_balanced(key, labels, num_samples, positive_fraction):
    """torchvision `BalancedPositiveNegativeSampler` for one image, uniform without replacement from `key`.

    Args: labels int32 [N]: 1 positive, 0 negative, -1 ignored (callers mark invalid candidates -1);
      num_samples S and positive_fraction are Python values (static under jit).
    Returns: indices int32 [S], is_positive bool [S], valid bool [S]. As torchvision,
      num_pos = min(int(S * positive_fraction), #positives) and num_neg = min(S - num_pos, #negatives);
      slots 0..num_pos-1 hold the sampled positives, the next num_neg the negatives, the rest are
      invalid (index 0, is_positive False). Works for N < S (N >= 1).
    Each candidate gets one random 31-bit score; the top-scoring members of a class are a uniform
    subset of it (ties, about N^2 / 2^32 pairs, go to the lower index).
    """
    count = labels.shape[0]
    positive = labels == 1
    negative = labels == 0
    max_positives = int(num_samples * positive_fraction)  # torchvision's int() of a Python float
    num_pos = jnp.minimum(max_positives, jnp.sum(positive))
    num_neg = jnp.minimum(num_samples - num_pos, jnp.sum(negative))

    scores = (jax.random.bits(key, (count,), jnp.uint32) >> 1).astype(jnp.int32)  # >= 0, so members beat -1
    positive_order = _random_subset_order(scores, positive, max(min(max_positives, count), 1))
    negative_order = _random_subset_order(scores, negative, min(num_samples, count))

    slot = jnp.arange(num_samples)
    is_positive = slot < num_pos
    valid = slot < num_pos + num_neg
    positive_pick = positive_order[jnp.minimum(slot, positive_order.shape[0] - 1)]
    negative_pick = negative_order[jnp.clip(slot - num_pos, 0, negative_order.shape[0] - 1)]
    indices = jnp.where(is_positive, positive_pick, negative_pick)
    return jnp.where(valid, indices, 0).astype(jnp.int32), is_positive, valid
