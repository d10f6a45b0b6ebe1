"""models.norm.BatchNorm against torch.nn.BatchNorm2d: eval and train mode, running updates, gradients, masking."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from maskrcnn_jax.detector.spec import NORM_STATISTICS
from maskrcnn_jax.models.norm import BatchNorm

torch = pytest.importorskip("torch", reason="torch is the reference for BatchNorm")


def random_setup(channels=5, seed=0):
    rng = np.random.default_rng(seed)
    params = {
        "scale": rng.uniform(0.5, 1.5, channels).astype(np.float32),
        "bias": rng.normal(size=channels).astype(np.float32),
        "mean": rng.normal(size=channels).astype(np.float32),
        "var": rng.uniform(0.5, 2.0, channels).astype(np.float32),
    }
    torch_norm = torch.nn.BatchNorm2d(channels, eps=1e-5, momentum=0.1)
    with torch.no_grad():
        torch_norm.weight.copy_(torch.from_numpy(params["scale"]))
        torch_norm.bias.copy_(torch.from_numpy(params["bias"]))
        torch_norm.running_mean.copy_(torch.from_numpy(params["mean"]))
        torch_norm.running_var.copy_(torch.from_numpy(params["var"]))
    x = (rng.normal(size=(3, 4, 6, channels)) * 2 + 1).astype(np.float32)
    return params, torch_norm, x


def torch_nhwc(module, x_nhwc):
    return module(torch.from_numpy(x_nhwc).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


def test_eval_mode_equals_torch_eval():
    params, torch_norm, x = random_setup()
    torch_norm.eval()
    expected = torch_nhwc(torch_norm, x).detach().numpy()
    got = BatchNorm().apply({"params": params}, jnp.asarray(x))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_train_mode_output_statistics_and_gradients_equal_torch_train():
    params, torch_norm, x = random_setup()
    torch_norm.train()
    x_torch = torch.from_numpy(x).requires_grad_(True)
    y_torch = torch_norm(x_torch.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    upstream = np.random.default_rng(1).normal(size=x.shape).astype(np.float32)
    (y_torch * torch.from_numpy(upstream)).sum().backward()

    def loss(params, x):
        y, updates = BatchNorm().apply({"params": params}, x, train=True, mutable=[NORM_STATISTICS])
        return jnp.sum(y * upstream), (y, updates[NORM_STATISTICS])

    (_, (y, statistics)), (param_grads, x_grad) = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(
        params, jnp.asarray(x))
    np.testing.assert_allclose(y, y_torch.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(statistics["mean"], torch_norm.running_mean.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(statistics["var"], torch_norm.running_var.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(x_grad, x_torch.grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(param_grads["scale"], torch_norm.weight.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(param_grads["bias"], torch_norm.bias.grad.numpy(), rtol=1e-4, atol=1e-4)
    # Statistics are not weights: no gradient reaches them.
    assert not np.any(param_grads["mean"]) and not np.any(param_grads["var"])


def test_train_mode_with_valid_mask_equals_torch_on_the_valid_rows_only():
    params, torch_norm, x = random_setup()
    torch_norm.train()
    valid = np.array([True, False, True])
    expected = torch_nhwc(torch_norm, x[valid]).detach().numpy()
    y, updates = BatchNorm().apply({"params": params}, jnp.asarray(x), train=True, valid=jnp.asarray(valid)[:, None, None],
                                   mutable=[NORM_STATISTICS])
    np.testing.assert_allclose(np.asarray(y)[valid], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(updates[NORM_STATISTICS]["var"], torch_norm.running_var.numpy(), rtol=1e-5, atol=1e-6)


def test_no_valid_position_keeps_running_statistics_and_output_finite():
    params, _, x = random_setup()
    y, updates = BatchNorm().apply({"params": params}, jnp.asarray(x), train=True, valid=jnp.zeros((3, 1, 1), bool),
                                   mutable=[NORM_STATISTICS])
    assert np.all(np.isfinite(y))
    np.testing.assert_array_equal(updates[NORM_STATISTICS]["mean"], params["mean"])
    np.testing.assert_array_equal(updates[NORM_STATISTICS]["var"], params["var"])
