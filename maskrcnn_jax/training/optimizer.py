"""The learning-rate schedule and the optax gradient transformation of the trainer.

torchvision's detection recipe: SGD with momentum 0.9 and weight decay 1e-4 on the trainable
parameters, a linear warm-up from `warmup_factor` x the base rate, then steps of x`decay_factor`
(or a cosine decay). The learning rate is a function of the train step (the number of batches
consumed), applied by the train step itself: a skipped (non-finite) step leaves the optimizer
state untouched but the schedule still moves on with the data.
"""

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import optax

LearningRateFn = Callable[[jax.Array], jax.Array]

SCHEDULES = ("multistep", "cosine")


def learning_rate_schedule(*, base_learning_rate: float, num_steps: int, warmup_steps: int = 0,
                           warmup_factor: float = 1e-3, schedule: str = "multistep",
                           decay_steps: Sequence[int] = (), decay_factor: float = 0.1) -> LearningRateFn:
    """step (int scalar, 0 for the first update) -> learning rate (float32 scalar).

    Warm-up as torchvision's LinearLR per iteration: factor warmup_factor at step 0 rising linearly
    to 1 at warmup_steps. "multistep": x decay_factor for every decay step <= step (torch's
    MultiStepLR). "cosine": half a cosine from the base rate at 0 to 0 at num_steps.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"learning-rate schedule {schedule!r} is not one of {SCHEDULES}")
    decay_steps = tuple(sorted(int(s) for s in decay_steps))
    cosine = optax.cosine_decay_schedule(base_learning_rate, max(num_steps, 1))

    def learning_rate(step):
        step = jnp.asarray(step, jnp.float32)
        if warmup_steps > 0:
            alpha = jnp.minimum(step / warmup_steps, 1.0)
            warmup = warmup_factor * (1.0 - alpha) + alpha
        else:
            warmup = 1.0
        if schedule == "cosine":
            decayed = cosine(step)
        else:
            passed = sum((step >= boundary).astype(jnp.float32) for boundary in decay_steps)
            decayed = base_learning_rate * decay_factor ** passed
        return jnp.asarray(warmup * decayed, jnp.float32)

    return learning_rate


def sgd_without_learning_rate(frozen_mask, *, momentum: float = 0.9, weight_decay: float = 1e-4,
                              clip_norm: float = 0.0) -> optax.GradientTransformation:
    """SGD's update before the learning rate: clip -> + weight_decay x params -> momentum trace.

    The train step multiplies the result by -learning_rate(step). Leaves where `frozen_mask`
    (a tree of bools like the parameters, e.g. `models.frozen_parameter_mask`) is True get zero
    updates and keep no optimizer state. clip_norm > 0 clips the trainable gradients' global norm
    (torchvision's recipe does not clip). As torch.optim.SGD: buf = momentum buf + (g + wd p).
    """
    steps = []
    if clip_norm > 0:
        steps.append(optax.clip_by_global_norm(clip_norm))
    if weight_decay > 0:
        steps.append(optax.add_decayed_weights(weight_decay))
    steps.append(optax.trace(decay=momentum, nesterov=False))
    labels = jax.tree.map(lambda frozen: "frozen" if frozen else "trainable", frozen_mask)
    return optax.multi_transform({"trainable": optax.chain(*steps), "frozen": optax.set_to_zero()}, labels)
