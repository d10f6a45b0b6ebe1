"""Loss, gradient and training-step parity with torchvision's Mask R-CNN R50-FPN v2 (BatchNorm in train mode
everywhere, every layer trainable): the tests of loss_parity_torchvision.py on this architecture's fixture."""

import pytest

pytest.importorskip("torch")
pytest.importorskip("torchvision")

from loss_parity_torchvision import *  # noqa: E402, F403 (its tests, collected here on this module's `parity`)
from loss_parity_torchvision import compute_parity  # noqa: E402


@pytest.fixture(scope="module")
def parity():
    return compute_parity("v2")
