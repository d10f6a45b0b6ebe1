"""The learning-rate schedules and the SGD update against torch.optim (the recipe torchvision's
detection reference trains with), the frozen mask, clipping, and the non-finite guard of the step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from maskrcnn_jax.training.optimizer import learning_rate_schedule, sgd_without_learning_rate
from maskrcnn_jax.training.state import TrainState
from maskrcnn_jax.training.step import train_step_fn

torch = pytest.importorskip("torch")

NUM_STEPS = 40


def torch_learning_rates(base, warmup_steps, warmup_factor, decay):
    """lr of torch.optim.SGD at steps 0..NUM_STEPS-1 with LinearLR warm-up chained with `decay`."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base)
    scheduler = torch.optim.lr_scheduler.ChainedScheduler([
        torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=warmup_factor, total_iters=warmup_steps),
        decay(optimizer),
    ])
    rates = []
    for _ in range(NUM_STEPS):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return np.array(rates)


@pytest.mark.parametrize("schedule", ["multistep", "cosine"])
def test_learning_rate_schedule_equals_torch_warmup_and_decay(schedule):
    decay = {
        "multistep": lambda o: torch.optim.lr_scheduler.MultiStepLR(o, milestones=[20, 30], gamma=0.1),
        "cosine": lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=NUM_STEPS),
    }[schedule]
    expected = torch_learning_rates(0.02, 10, 1e-3, decay)
    ours = learning_rate_schedule(base_learning_rate=0.02, num_steps=NUM_STEPS, warmup_steps=10, warmup_factor=1e-3,
                                  schedule=schedule, decay_steps=(20, 30), decay_factor=0.1)
    np.testing.assert_allclose([float(ours(step)) for step in range(NUM_STEPS)], expected, rtol=1e-5, atol=1e-9)


def test_unknown_schedule_is_refused():
    with pytest.raises(ValueError, match="poly"):
        learning_rate_schedule(base_learning_rate=0.1, num_steps=10, schedule="poly")


def _toy_problem(seed=0):
    rng = np.random.default_rng(seed)
    params = {"backbone": {"kernel": rng.normal(size=(3, 4)).astype(np.float32)},
              "head": {"kernel": rng.normal(size=(4, 2)).astype(np.float32),
                       "bias": rng.normal(size=(2,)).astype(np.float32)}}
    frozen = {"backbone": {"kernel": True}, "head": {"kernel": False, "bias": False}}
    batches = [{"x": rng.normal(size=(5, 3)).astype(np.float32), "y": rng.normal(size=(5, 2)).astype(np.float32)}
               for _ in range(6)]
    return params, frozen, batches


def _toy_loss(params, batch, key):
    hidden = jnp.tanh(batch["x"] @ params["backbone"]["kernel"])
    prediction = hidden @ params["head"]["kernel"] + params["head"]["bias"]
    loss = jnp.mean(jnp.square(prediction - batch["y"]))
    return loss, {"loss_squared_error": loss}


def _torch_sgd(params, batches, clip_norm, learning_rate):
    """The toy problem trained by torch.optim.SGD with the backbone frozen (requires_grad=False)."""
    backbone = torch.nn.Parameter(torch.tensor(params["backbone"]["kernel"]), requires_grad=False)
    kernel = torch.nn.Parameter(torch.tensor(params["head"]["kernel"]))
    bias = torch.nn.Parameter(torch.tensor(params["head"]["bias"]))
    optimizer = torch.optim.SGD([kernel, bias], lr=learning_rate(0), momentum=0.9, weight_decay=1e-4)
    for step, batch in enumerate(batches):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step)
        optimizer.zero_grad()
        hidden = torch.tanh(torch.tensor(batch["x"]) @ backbone)
        loss = torch.mean((hidden @ kernel + bias - torch.tensor(batch["y"])) ** 2)
        loss.backward()
        if clip_norm:
            torch.nn.utils.clip_grad_norm_([kernel, bias], clip_norm)
        optimizer.step()
    return {"kernel": kernel.detach().numpy(), "bias": bias.detach().numpy()}


@pytest.mark.parametrize("clip_norm", [0.0, 0.05])
def test_train_step_equals_torch_sgd_with_momentum_weight_decay_and_frozen_parameters(clip_norm):
    params, frozen, batches = _toy_problem()
    schedule = learning_rate_schedule(base_learning_rate=0.1, num_steps=len(batches), warmup_steps=3,
                                      warmup_factor=0.1, decay_steps=(4,))
    optimizer = sgd_without_learning_rate(frozen, momentum=0.9, weight_decay=1e-4, clip_norm=clip_norm)
    step = jax.jit(train_step_fn(_toy_loss, optimizer, schedule, frozen))
    state = TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params), jax.random.key_data(jax.random.key(0)))
    for batch in batches:
        state, metrics = step(state, batch)
        assert int(metrics["skipped"]) == 0
    expected = _torch_sgd(params, batches, clip_norm, lambda s: float(schedule(s)))
    np.testing.assert_array_equal(state.params["backbone"]["kernel"], params["backbone"]["kernel"])  # frozen
    np.testing.assert_allclose(state.params["head"]["kernel"], expected["kernel"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state.params["head"]["bias"], expected["bias"], rtol=1e-5, atol=1e-6)
    assert int(state.step) == len(batches)
    assert not np.allclose(state.params["head"]["kernel"], params["head"]["kernel"])


def test_non_finite_gradient_skips_the_update_and_reports_it():
    params, frozen, batches = _toy_problem(1)
    optimizer = sgd_without_learning_rate(frozen)
    step = jax.jit(train_step_fn(_toy_loss, optimizer, learning_rate_schedule(base_learning_rate=0.1, num_steps=9),
                                 frozen))
    state = TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params), jax.random.key_data(jax.random.key(0)))
    state, _ = step(state, batches[0])
    before = jax.device_get(state)
    poisoned = dict(batches[1], y=np.where(np.arange(2) == 1, np.inf, batches[1]["y"]).astype(np.float32))
    state, metrics = step(state, poisoned)
    assert int(metrics["skipped"]) == 1 and not np.isfinite(float(metrics["loss"]))
    assert int(state.step) == 2
    for old, new in zip(jax.tree.leaves(before.params) + jax.tree.leaves(before.opt_state),
                        jax.tree.leaves(state.params) + jax.tree.leaves(state.opt_state)):
        np.testing.assert_array_equal(new, old)
    state, metrics = step(state, batches[2])
    assert int(metrics["skipped"]) == 0
    assert not np.array_equal(state.params["head"]["bias"], before.params["head"]["bias"])
